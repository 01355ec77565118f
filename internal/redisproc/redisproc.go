// Package redisproc runs redis-server processes on free ports of
// 127.0.0.1: a standalone server, or a Cluster of three primaries with
// one replica each, created with redis-cli --cluster create. The tests'
// helpers (internal/redistest) and the benchmark (bench) both start their
// servers through it; it reports failures as errors and leaves skipping,
// failing and cleaning up to its callers.
package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config is how a server persists and what else it is told. The zero
// Config persists nothing.
type Config struct {
	// AppendFsyncAlways turns the AOF on and fsyncs it before each write
	// is acknowledged (appendonly yes, appendfsync always), so that a
	// kill -9 loses nothing acknowledged.
	AppendFsyncAlways bool
	// Args are more redis-server arguments, such as
	// {"--maxmemory-policy", "allkeys-lru"}; later ones override earlier
	// ones, AppendFsyncAlways's included.
	Args []string
}

// Server is one redis-server process. Its methods are for one goroutine.
type Server struct {
	// Addr is host:port, the same across restarts.
	Addr string

	path string
	dir  string
	args []string
	cmd  *exec.Cmd // nil while stopped
}

// NewServer prepares a redis-server, the program at path, on a free port
// with its files (data and redis.log) in dir, which must exist. It does
// not start it: Start does.
func NewServer(path, dir string, cfg Config) (*Server, error) {
	// redis-server changes into its data directory before it opens its
	// log, so a relative path would point elsewhere.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), path: path, dir: dir}
	s.args = []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--save", "", "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log")}
	if cfg.AppendFsyncAlways {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		s.args = append(s.args, "--appendonly", "no")
	}
	s.args = append(s.args, cfg.Args...)
	return s, nil
}

// NewSentinel prepares a redis-server in Sentinel mode, on port, with
// the configuration file conf.
func NewSentinel(path, dir, conf string, port int) *Server {
	return &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), path: path, dir: dir,
		args: []string{conf, "--sentinel"}}
}

// Start starts the server, or starts it again on the same port with the
// same files after Kill or Stop, and waits until it answers PING (its AOF
// loaded). A server that runs is left alone.
func (s *Server) Start() error {
	if s.cmd != nil {
		return nil
	}
	cmd := exec.Command(s.path, s.args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	s.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = c.Ping(context.Background()).Err(); err == nil {
			return nil
		}
	}
	s.Kill()
	return fmt.Errorf("redis-server on %s did not answer: %v\n%s", s.Addr, err, s.Log())
}

// Running reports whether the process was started and not since killed
// or stopped.
func (s *Server) Running() bool { return s.cmd != nil }

// Kill sends SIGKILL and waits for the process to end: what the server
// acknowledged survives only as far as its AOF was fsynced.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Stop sends SIGTERM, and waits for the server to exit as it does on a
// shutdown.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

func (s *Server) signal(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	_ = s.cmd.Wait() // its exit status is the signal's
	s.cmd = nil
}

// Log returns the server's log file.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return string(b)
}

// NodeTimeout is the cluster-node-timeout of a Cluster's nodes: how long a
// primary must be unreachable before its replica is promoted.
const NodeTimeout = 2 * time.Second

// Cluster is a Redis Cluster of three primaries, each with one replica.
type Cluster struct {
	// Nodes are its servers, in the order redis-cli --cluster create was
	// given them: it makes the first three primaries.
	Nodes []*Server
}

// StartCluster starts six servers, each with its files in a directory of
// its own under dir, makes them a Cluster with redis-cli --cluster
// create, and waits until every node reports cluster_state:ok. On an
// error it kills what it started.
func StartCluster(dir string, cfg Config) (c *Cluster, err error) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, err
	}
	cfg.Args = append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(int(NodeTimeout.Milliseconds()))}, cfg.Args...)
	c = &Cluster{}
	defer func() {
		if err != nil {
			c.Kill()
		}
	}()
	for i := range 6 {
		d := filepath.Join(dir, strconv.Itoa(i))
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
		s, err := NewServer(server, d, cfg)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
		if err := s.Start(); err != nil {
			return nil, err
		}
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	out, err := exec.Command(cli, append(args, "--cluster-replicas", "1", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	return c, c.WaitOK()
}

// Kill kills every node.
func (c *Cluster) Kill() {
	for _, s := range c.Nodes {
		s.Kill()
	}
}

// Addrs returns the addresses of every node.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr
	}
	return addrs
}

// WaitOK waits until every running node reports cluster_state:ok with all
// 16384 slots served, and knows three primaries each with a replica
// linked to it and synced.
func (c *Cluster) WaitOK() error {
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if last = c.ok(); last == nil {
			return nil
		}
	}
	return fmt.Errorf("the cluster did not become ok: %w", last)
}

func (c *Cluster) ok() error {
	ctx := context.Background()
	for _, s := range c.Nodes {
		if !s.Running() {
			continue
		}
		n := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DisableIdentity: true})
		info, err := n.ClusterInfo(ctx).Result()
		if err == nil && (!strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384")) {
			err = fmt.Errorf("%s: %s", s.Addr, strings.ReplaceAll(info, "\r\n", " "))
		}
		if err == nil {
			err = linkedReplicas(ctx, n)
		}
		if err == nil {
			err = Synced(ctx, n)
		}
		n.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// linkedReplicas fails unless the node's view has three primaries, each
// with a replica whose link is up.
func linkedReplicas(ctx context.Context, n *redis.Client) error {
	nodes, err := n.ClusterNodes(ctx).Result()
	if err != nil {
		return err
	}
	var primaries, replicas int
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || strings.Contains(f[2], "fail") || f[7] != "connected" {
			continue
		}
		switch {
		case strings.Contains(f[2], "master") && len(f) > 8:
			primaries++
		case strings.Contains(f[2], "slave"):
			replicas++
		}
	}
	if primaries != 3 || replicas != 3 {
		return fmt.Errorf("%s sees %d primaries with slots and %d replicas connected:\n%s", n.Options().Addr, primaries, replicas, nodes)
	}
	return nil
}

// Synced fails if the node is a replica that has not completed its sync
// with its primary: it could not be promoted.
func Synced(ctx context.Context, n *redis.Client) error {
	info, err := n.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if InfoField(info, "role") == "slave" && InfoField(info, "master_link_status") != "up" {
		return fmt.Errorf("%s has not synced with its primary", n.Options().Addr)
	}
	return nil
}

// InfoField returns the value of field name in the text of INFO.
func InfoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// FreePort returns a port of 127.0.0.1 that is free, and whose cluster
// bus port (10000 higher) is free too.
func FreePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			return 0, err
		}
		bus.Close()
		return port, nil
	}
	return 0, errors.New("no free port with a free cluster bus port")
}
