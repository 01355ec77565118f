package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42300104/dedup"
)

// redisPersistence is the redis-server configuration that matches a
// durability mode: AOF fsynced on every write for SyncAlways, every second
// for SyncInterval (Redis's nearest period), no persistence for SyncNone.
func redisPersistence(mode dedup.SyncMode) []string {
	switch mode {
	case dedup.SyncAlways:
		return []string{"--appendonly", "yes", "--appendfsync", "always"}
	case dedup.SyncInterval:
		return []string{"--appendonly", "yes", "--appendfsync", "everysec"}
	default:
		return []string{"--appendonly", "no"}
	}
}

// redisTrial starts a redis-server of its own on a free port of 127.0.0.1
// with its data in dir/data, and times SET id 1 NX EX TTL through go-redis:
// pipelined per batch, one round trip per ID at batch size 1. Without a
// redis-server on PATH the row is skipped.
func redisTrial(cfg Config, _ *inputs, dir string) (trial, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return trial{}, errSkip{"redis-server not found on PATH; install it (apt-get install redis-server) to run this baseline"}
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		return trial{}, err
	}
	srv, addr, err := startRedis(path, dir, data, cfg.Sync)
	if err != nil {
		return trial{}, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: cfg.Concurrency, DisableIdentity: true})
	stop := func() error {
		rdb.Close()
		srv.Process.Kill()
		srv.Wait()
		return nil
	}
	ctx := context.Background()
	return trial{
		call: func(ids [][]byte) (int, error) {
			if len(ids) == 1 {
				ok, err := rdb.SetNX(ctx, string(ids[0]), 1, TTL).Result()
				return count(ok), err
			}
			cmds := make([]*redis.BoolCmd, len(ids))
			pipe := rdb.Pipeline()
			for i, id := range ids {
				cmds[i] = pipe.SetNX(ctx, string(id), 1, TTL)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return 0, err
			}
			n := 0
			for _, c := range cmds {
				n += count(c.Val())
			}
			return n, nil
		},
		marks: func() int {
			n, _ := rdb.DBSize(ctx).Result()
			return int(n)
		},
		dir: data,
		external: func() (time.Duration, int64, error) {
			return redisUsage(ctx, rdb)
		},
		close: stop,
	}, nil
}

// startRedis runs redis-server on a free port, its log in dir and its data
// in data, and waits until it answers.
func startRedis(path, dir, data string, mode dedup.SyncMode) (*exec.Cmd, string, error) {
	// redis-server changes into its data directory before it opens its
	// log, so a relative path would point elsewhere.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", err
	}
	if data, err = filepath.Abs(data); err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := l.Addr().String()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	args := append([]string{"--bind", "127.0.0.1", "--port", port, "--dir", data,
		"--save", "", "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log")}, redisPersistence(mode)...)
	srv := exec.Command(path, args...)
	if err := srv.Start(); err != nil {
		return nil, "", err
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return srv, addr, nil
		}
		if time.Now().After(deadline) {
			srv.Process.Kill()
			srv.Wait()
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			return nil, "", fmt.Errorf("redis-server did not listen on %s: %s", addr, log)
		}
	}
}

// redisUsage reads the server's CPU time (used_cpu_user + used_cpu_sys) and
// used_memory from INFO.
func redisUsage(ctx context.Context, rdb *redis.Client) (time.Duration, int64, error) {
	info, err := rdb.Info(ctx, "cpu", "memory").Result()
	if err != nil {
		return 0, 0, err
	}
	var cpu float64
	var mem int64
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		switch k {
		case "used_cpu_user", "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		case "used_memory":
			mem, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return time.Duration(cpu * float64(time.Second)), mem, nil
}
