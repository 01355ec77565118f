package bench

import (
	"bufio"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/redisproc"
	"github.com/seed42300104/dedup/redisstore"
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

// redisPrefix is the prefix of every key the Redis rows write, the
// backend's and the raw baseline's alike: redisstore's default.
const redisPrefix = redisstore.DefaultPrefix

// redisCalls makes a Redis row's call on a client of the row's own
// server or Cluster.
type redisCalls func(ctx context.Context, rdb redis.UniversalClient) (func(ids [][]byte) (int, error), error)

// redisTrial starts a redis-server of its own, or with cluster a Cluster
// of three primaries with a replica each, every node on a free port of
// 127.0.0.1 with its data under dir and persisting as cfg.Sync asks, and
// times the calls calls makes. Without redis-server (and for a Cluster
// redis-cli) on PATH the row is skipped. The server's CPU time and memory
// are the row's: every node's, on a Cluster.
func redisTrial(cfg Config, dir string, cluster bool, calls redisCalls) (trial, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return trial{}, errSkip{"redis-server not found on PATH; install it (apt-get install redis-server) to run this row"}
	}
	if _, err := exec.LookPath("redis-cli"); cluster && err != nil {
		return trial{}, errSkip{"redis-cli not found on PATH; install it (apt-get install redis-tools) to run this row"}
	}
	// The log goes to the discarded stdout, so that disk per mark counts
	// the data alone.
	pcfg := redisproc.Config{Args: append(redisPersistence(cfg.Sync), "--logfile", "")}
	var rdb redis.UniversalClient
	var nodes []*redisproc.Server
	if cluster {
		c, err := redisproc.StartCluster(dir, pcfg)
		if err != nil {
			return trial{}, err
		}
		nodes = c.Nodes
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), PoolSize: cfg.Concurrency, DisableIdentity: true})
	} else {
		s, err := redisproc.NewServer(path, dir, pcfg)
		if err != nil {
			return trial{}, err
		}
		if err := s.Start(); err != nil {
			return trial{}, err
		}
		nodes = []*redisproc.Server{s}
		rdb = redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: cfg.Concurrency, DisableIdentity: true})
	}
	stop := func() error {
		rdb.Close()
		for _, s := range nodes {
			s.Kill()
		}
		return nil
	}
	ctx := context.Background()
	call, err := calls(ctx, rdb)
	if err != nil {
		stop()
		return trial{}, err
	}
	return trial{
		call: call,
		marks: func() int {
			n, _ := sumPrimaries(ctx, rdb, func(c *redis.Client) (int64, error) { return c.DBSize(ctx).Result() })
			return int(n)
		},
		dir: dir,
		external: func() (time.Duration, int64, error) {
			return redisUsage(ctx, rdb)
		},
		close: stop,
	}, nil
}

// rawSetNX is the hand-written check-and-mark the backend is measured
// against: SET key 1 PX ttl NX, the backend's command with 1 for its
// nonce, pipelined per batch, one round trip per ID at batch size 1.
func rawSetNX(ctx context.Context, rdb redis.UniversalClient) (func([][]byte) (int, error), error) {
	ms := TTL.Milliseconds()
	set := func(id []byte) *redis.Cmd {
		return redis.NewCmd(ctx, "set", redisPrefix+string(id), 1, "px", ms, "nx")
	}
	return func(ids [][]byte) (int, error) {
		cmds := make([]*redis.Cmd, len(ids))
		if len(ids) == 1 {
			cmds[0] = set(ids[0])
			_ = rdb.Process(ctx, cmds[0]) // the error is the command's
		} else {
			pipe := rdb.Pipeline()
			for i, id := range ids {
				cmds[i] = set(id)
				_ = pipe.Process(ctx, cmds[i])
			}
			_, _ = pipe.Exec(ctx) // the errors are the commands'
		}
		n := 0
		for _, c := range cmds {
			switch err := c.Err(); err {
			case nil:
				n++
			case redis.Nil:
			default:
				return 0, err
			}
		}
		return n, nil
	}, nil
}

// backendCalls checks and marks through a redisstore.Store on the client.
func backendCalls(ctx context.Context, rdb redis.UniversalClient) (func([][]byte) (int, error), error) {
	s, err := redisstore.New(ctx, rdb, &redisstore.Options{Prefix: redisPrefix})
	if err != nil {
		return nil, err
	}
	return func(ids [][]byte) (int, error) {
		if len(ids) == 1 {
			isNew, err := s.CheckAndMarkContext(ctx, ids[0], TTL)
			return count(isNew), err
		}
		isNew, err := s.CheckAndMarkBatchContext(ctx, ids, TTL)
		return count(isNew...), err
	}, nil
}

// sumPrimaries adds up fn over every primary of a Cluster, or runs it on
// the one server of a client.
func sumPrimaries(ctx context.Context, rdb redis.UniversalClient, fn func(*redis.Client) (int64, error)) (int64, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return fn(rdb.(*redis.Client))
	}
	var mu sync.Mutex
	var total int64
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		n, err := fn(c)
		mu.Lock()
		total += n
		mu.Unlock()
		return err
	})
	return total, err
}

// redisUsage reads the servers' CPU time (used_cpu_user + used_cpu_sys)
// and used_memory from INFO: every node's, replicas' too, on a Cluster.
func redisUsage(ctx context.Context, rdb redis.UniversalClient) (time.Duration, int64, error) {
	var mu sync.Mutex
	var cpu float64
	var mem int64
	node := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "cpu", "memory").Result()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		sc := bufio.NewScanner(strings.NewReader(info))
		for sc.Scan() {
			k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), ":")
			switch k {
			case "used_cpu_user", "used_cpu_sys":
				f, _ := strconv.ParseFloat(v, 64)
				cpu += f
			case "used_memory":
				n, _ := strconv.ParseInt(v, 10, 64)
				mem += n
			}
		}
		return nil
	}
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachShard(ctx, node)
	} else {
		err = node(ctx, rdb.(*redis.Client))
	}
	return time.Duration(cpu * float64(time.Second)), mem, err
}
