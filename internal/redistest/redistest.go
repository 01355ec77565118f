// Package redistest starts real redis-server processes for tests: a
// standalone server, a primary and its replica behind a Sentinel, or a
// Cluster of three primaries with one replica each; every process on free
// ports of 127.0.0.1 with its files in the test's temporary directory, and
// killed when the test ends.
//
// Where redis-server (or, for a Cluster, redis-cli) is not on PATH, the
// test is skipped with one line saying so, unless the environment sets
// DEDUP_REQUIRE_REDIS=1 (as .ci/run does), which makes it a failure.
package redistest

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
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RequireEnv names the environment variable that turns a missing
// redis-server into a test failure instead of a skip.
const RequireEnv = "DEDUP_REQUIRE_REDIS"

// Require returns the path of the program name ("redis-server",
// "redis-cli") on PATH. Without one it skips t, or fails it where
// RequireEnv is set.
func Require(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("%s not on PATH, and %s is set", name, RequireEnv)
		}
		t.Skipf("%s not on PATH; set %s=1 to fail instead", name, RequireEnv)
	}
	return path
}

// Config is how a server persists and what else it is told. The zero
// Config persists nothing.
type Config struct {
	// AppendFsyncAlways turns the AOF on and fsyncs it before each write
	// is acknowledged (appendonly yes, appendfsync always), so that a
	// kill -9 loses nothing acknowledged.
	AppendFsyncAlways bool
	// Args are more redis-server arguments, such as
	// {"--maxmemory-policy", "allkeys-lru"}.
	Args []string
}

// Server is one redis-server process. Its methods are for the test
// goroutine.
type Server struct {
	// Addr is host:port, the same across restarts.
	Addr string

	t    testing.TB
	path string
	dir  string
	args []string
	cmd  *exec.Cmd // nil while stopped
}

// Start runs a standalone redis-server, and kills it when t ends.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	s := newServer(t, cfg, t.TempDir())
	s.Restart()
	return s
}

func newServer(t testing.TB, cfg Config, dir string) *Server {
	t.Helper()
	path := Require(t, "redis-server")
	port := freePort(t)
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), t: t, path: path, dir: dir}
	s.args = []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--save", "", "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log")}
	if cfg.AppendFsyncAlways {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		s.args = append(s.args, "--appendonly", "no")
	}
	s.args = append(s.args, cfg.Args...)
	t.Cleanup(s.Kill)
	return s
}

// Restart starts the server again, on the same port with the same files,
// after Kill or Stop, and waits until it answers PING (its AOF loaded).
// A server that runs is left alone.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(s.path, s.args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	s.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = c.Ping(context.Background()).Err(); err == nil {
			return
		}
	}
	s.t.Fatalf("redis-server on %s did not answer: %v\n%s", s.Addr, err, s.Log())
}

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

// Client returns a client of this server alone, closed when the test
// ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Sentinel is a primary with one replica, watched by one Sentinel.
type Sentinel struct {
	Primary, Replica, Sentinel *Server
}

// MasterName is the name a Sentinel knows its primary by.
const MasterName = "dedup"

// StartSentinel starts a primary, its replica and a Sentinel (quorum 1)
// watching them, waits until the Sentinel knows the replica and the
// replica has synced, and kills them when t ends.
func StartSentinel(t testing.TB, cfg Config) *Sentinel {
	t.Helper()
	primary := Start(t, cfg)
	host, port, _ := strings.Cut(primary.Addr, ":")
	rcfg := cfg
	rcfg.Args = append(append([]string{}, cfg.Args...), "--replicaof", host, port)
	replica := Start(t, rcfg)

	dir := t.TempDir()
	sport := freePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s %d\nsentinel failover-timeout %s 10000\n",
		sport, dir, filepath.Join(dir, "redis.log"), MasterName, host, port, MasterName, NodeTimeout.Milliseconds(), MasterName)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	sentinel := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(sport)), t: t,
		path: Require(t, "redis-server"), dir: dir, args: []string{conf, "--sentinel"}}
	t.Cleanup(sentinel.Kill)
	sentinel.Restart()

	ctx := context.Background()
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr, MaxRetries: -1, DisableIdentity: true})
	defer sc.Close()
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr, MaxRetries: -1, DisableIdentity: true})
	defer rc.Close()
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		replicas, err := sc.Replicas(ctx, MasterName).Result()
		if err == nil && len(replicas) != 1 {
			err = fmt.Errorf("the Sentinel knows %d replicas", len(replicas))
		}
		if err == nil {
			err = synced(ctx, rc)
		}
		if last = err; err == nil {
			return &Sentinel{Primary: primary, Replica: replica, Sentinel: sentinel}
		}
	}
	t.Fatalf("the Sentinel setup did not become ready: %v", last)
	return nil
}

// Client returns a client that finds the primary through the Sentinel,
// closed when the test ends.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: MasterName,
		SentinelAddrs: []string{s.Sentinel.Addr}, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// Cluster is a Redis Cluster of three primaries, each with one replica.
type Cluster struct {
	// Nodes are its servers, in the order redis-cli --cluster create was
	// given them: it makes the first three primaries.
	Nodes []*Server
}

// NodeTimeout is the cluster-node-timeout of a Cluster's nodes: how long a
// primary must be unreachable before its replica is promoted.
const NodeTimeout = 2 * time.Second

// StartCluster creates a Cluster with redis-cli --cluster create, waits
// until every node reports cluster_state:ok, and kills it when t ends.
func StartCluster(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	cli := Require(t, "redis-cli")
	Require(t, "redis-server")
	cfg.Args = append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(int(NodeTimeout.Milliseconds()))}, cfg.Args...)
	c := &Cluster{}
	addrs := make([]string, 6)
	for i := range addrs {
		dir := filepath.Join(t.TempDir(), strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		s := newServer(t, cfg, dir)
		s.Restart()
		c.Nodes = append(c.Nodes, s)
		addrs[i] = s.Addr
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	out, err := exec.Command(cli, append(args, "--cluster-replicas", "1", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(t)
	return c
}

// Addrs returns the addresses of every node.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr
	}
	return addrs
}

// Client returns a cluster client seeded with every node, closed when the
// test ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DisableIdentity: true})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// WaitOK waits until every running node reports cluster_state:ok with all
// 16384 slots served, and knows three primaries each with a replica
// linked to it and synced.
func (c *Cluster) WaitOK(t testing.TB) {
	t.Helper()
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if last = c.ok(); last == nil {
			return
		}
	}
	t.Fatalf("the cluster did not become ok: %v", last)
}

func (c *Cluster) ok() error {
	ctx := context.Background()
	for _, s := range c.Nodes {
		if s.cmd == nil {
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
			err = synced(ctx, n)
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

// WaitPrimary waits until node is a primary and reports
// cluster_state:ok: a replica promoted after its primary failed, or a
// primary restarted.
func (c *Cluster) WaitPrimary(t testing.TB, node *Server) {
	t.Helper()
	ctx := context.Background()
	n := redis.NewClient(&redis.Options{Addr: node.Addr, MaxRetries: -1, DisableIdentity: true})
	defer n.Close()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		role, err := n.Do(ctx, "role").Slice()
		info, err2 := n.ClusterInfo(ctx).Result()
		if err == nil && err2 == nil && role[0] == "master" && strings.Contains(info, "cluster_state:ok") {
			return
		}
		last = fmt.Sprint(role, err, err2)
	}
	t.Fatalf("%s is not an ok primary: %s", node.Addr, last)
}

// synced fails if the node is a replica that has not completed its sync
// with its primary: it could not be promoted.
func synced(ctx context.Context, n *redis.Client) error {
	info, err := n.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if infoField(info, "role") == "slave" && infoField(info, "master_link_status") != "up" {
		return fmt.Errorf("%s has not synced with its primary", n.Options().Addr)
	}
	return nil
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// Reshard moves slots slots from primary from to primary to with
// redis-cli --cluster reshard, keys and all, and returns once it is done.
func (c *Cluster) Reshard(t testing.TB, from, to *Server, slots int) {
	t.Helper()
	cli := Require(t, "redis-cli")
	ctx := context.Background()
	id := func(s *Server) string {
		n := redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true})
		defer n.Close()
		v, err := n.Do(ctx, "cluster", "myid").Text()
		if err != nil {
			t.Fatalf("CLUSTER MYID of %s: %v", s.Addr, err)
		}
		return v
	}
	out, err := exec.Command(cli, "--cluster", "reshard", from.Addr, "--cluster-from", id(from),
		"--cluster-to", id(to), "--cluster-slots", strconv.Itoa(slots), "--cluster-yes").CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster reshard: %v\n%s", err, out)
	}
}

// Primaries returns the nodes that are primaries now.
func (c *Cluster) Primaries(t testing.TB) []*Server {
	t.Helper()
	var out []*Server
	for _, s := range c.Nodes {
		if s.cmd == nil {
			continue
		}
		n := redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true})
		role, err := n.Do(context.Background(), "role").Slice()
		n.Close()
		if err != nil {
			t.Fatalf("ROLE of %s: %v", s.Addr, err)
		}
		if role[0] == "master" {
			out = append(out, s)
		}
	}
	return out
}

// Primary returns the node that serves key's slot, as the cluster sees
// it now, and its replica.
func (c *Cluster) Primary(t testing.TB, key string) (primary, replica *Server) {
	t.Helper()
	ctx := context.Background()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DisableIdentity: true})
	defer cc.Close()
	p, err := cc.MasterForKey(ctx, key)
	if err != nil {
		t.Fatalf("finding the primary of %q: %v", key, err)
	}
	primary = c.node(t, p.Options().Addr)
	id, err := p.Do(ctx, "cluster", "myid").Text()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := p.Do(ctx, "cluster", "replicas", id).StringSlice()
	if err != nil || len(rs) == 0 {
		t.Fatalf("the replicas of %s: %v %v", primary.Addr, rs, err)
	}
	f := strings.Fields(rs[0]) // id host:port@bus flags ...
	addr, _, _ := strings.Cut(f[1], "@")
	return primary, c.node(t, addr)
}

func (c *Cluster) node(t testing.TB, addr string) *Server {
	t.Helper()
	for _, s := range c.Nodes {
		if s.Addr == addr {
			return s
		}
	}
	t.Fatalf("no node at %s", addr)
	return nil
}

// freePort returns a port of 127.0.0.1 that is free, and whose cluster bus
// port (10000 higher) is free too.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
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
			t.Fatal(err)
		}
		bus.Close()
		return port
	}
	t.Fatal("no free port with a free cluster bus port")
	return 0
}
