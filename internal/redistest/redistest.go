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
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42300104/dedup/internal/redisproc"
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
type Config = redisproc.Config

// Server is one redis-server process. Its methods are for the test
// goroutine.
type Server struct {
	*redisproc.Server
	t testing.TB
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
	p, err := redisproc.NewServer(Require(t, "redis-server"), dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return wrap(t, p)
}

// wrap makes p a test's server, killed when t ends.
func wrap(t testing.TB, p *redisproc.Server) *Server {
	s := &Server{Server: p, t: t}
	t.Cleanup(s.Kill)
	return s
}

// Restart starts the server again, on the same port with the same files,
// after Kill or Stop, and waits until it answers PING (its AOF loaded).
// A server that runs is left alone.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.Start(); err != nil {
		s.t.Fatal(err)
	}
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
	sport, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s %d\nsentinel failover-timeout %s 10000\n",
		sport, dir, filepath.Join(dir, "redis.log"), MasterName, host, port, MasterName, NodeTimeout.Milliseconds(), MasterName)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	sentinel := wrap(t, redisproc.NewSentinel(Require(t, "redis-server"), dir, conf, sport))
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
			err = redisproc.Synced(ctx, rc)
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

	proc *redisproc.Cluster
}

// NodeTimeout is the cluster-node-timeout of a Cluster's nodes: how long a
// primary must be unreachable before its replica is promoted.
const NodeTimeout = redisproc.NodeTimeout

// StartCluster creates a Cluster with redis-cli --cluster create, waits
// until every node reports cluster_state:ok, and kills it when t ends.
func StartCluster(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	Require(t, "redis-cli")
	Require(t, "redis-server")
	p, err := redisproc.StartCluster(t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{proc: p}
	for _, n := range p.Nodes {
		c.Nodes = append(c.Nodes, wrap(t, n))
	}
	return c
}

// Addrs returns the addresses of every node.
func (c *Cluster) Addrs() []string { return c.proc.Addrs() }

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
	if err := c.proc.WaitOK(); err != nil {
		t.Fatal(err)
	}
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
		if !s.Running() {
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
