package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
	"github.com/seed42300104/dedup/idempotency"
	"github.com/seed42300104/dedup/redisstore"
)

// redisHelp documents --redis in the root command's help.
const redisHelp = `Redis namespaces (--redis URL, or $DEDUP_REDIS when neither --dir nor --addr
is given):
  get, explain, scan, forget and stats can work on the keys the Redis backend
  (package redisstore) keeps under --redis-prefix (default "dedup:"),
  instead of on --dir. --redis takes a redis:// or rediss:// URL; several,
  repeated or comma-separated, are seed nodes of one Cluster, and the URL
  of any one node of a Cluster finds the others. The output formats and
  exit codes are those of --dir: get tells whether each ID has a live
  key (a mark or a record), as Seen does; explain shows a key's kind (mark, record,
  or the Redis type of a key the backend did not write), its TTL left and
  its record; scan lists marks and records (Redis keeps no expired
  versions, so --expired adds none) and reads every primary's whole
  keyspace with SCAN; stats shows each primary's keys under the prefix,
  memory and maxmemory-policy. The other commands refuse --redis.`

// redisAnnotation marks the commands that --redis serves.
const redisAnnotation = "dedupctl/redis"

// redisTarget is the Redis deployment --redis names.
type redisTarget struct {
	opts []*redis.Options // one per URL
}

// envList splits a comma-separated environment variable, as
// StringSliceVar splits a flag.
func envList(name string) []string {
	v := os.Getenv(name)
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// resolveRedis decides, before cmd runs, whether it works on a Redis
// namespace: --redis given, or $DEDUP_REDIS set and neither --dir nor
// --addr given. A command that --redis does not serve refuses --redis and
// --redis-prefix given on its command line, and ignores $DEDUP_REDIS.
func (g *globals) resolveRedis(cmd *cobra.Command) error {
	f := cmd.Flags()
	given := f.Changed("redis")
	if cmd.Annotations[redisAnnotation] == "" {
		if (given || f.Changed("redis-prefix")) && cmd.HasParent() {
			return usageError{fmt.Errorf("%s does not work with --redis: only get, explain, scan, forget and stats do", cmd.Name())}
		}
		return nil
	}
	if !given && (f.Changed("dir") || f.Changed("addr")) || len(g.redisURLs) == 0 {
		return nil
	}
	if given && (f.Changed("dir") || f.Changed("addr")) {
		return usageError{errors.New("give one of --dir, --addr and --redis")}
	}
	t := &redisTarget{}
	for _, u := range g.redisURLs {
		o, err := redis.ParseURL(strings.TrimSpace(u))
		if err != nil {
			return usageError{fmt.Errorf("--redis %q: %v", u, err)}
		}
		t.opts = append(t.opts, o)
	}
	g.redis = t
	return nil
}

// client connects to the deployment: a Cluster where several URLs are
// given or the one server says it is a Cluster node, the one server
// otherwise.
func (t *redisTarget) client(ctx context.Context) (redis.UniversalClient, error) {
	first := t.opts[0]
	first.DisableIdentity = true
	if len(t.opts) == 1 {
		c := redis.NewClient(first)
		info, err := c.Info(ctx, "cluster").Result()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("redis at %s: %w", first.Addr, err)
		}
		if !strings.Contains(info, "cluster_enabled:1") {
			return c, nil
		}
		c.Close()
	}
	var addrs []string
	for _, o := range t.opts {
		addrs = append(addrs, o.Addr)
	}
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Username: first.Username,
		Password: first.Password, TLSConfig: first.TLSConfig, DisableIdentity: true}), nil
}

// quietRedis drops go-redis's log lines: the error a command returns
// says what failed, once, on stderr.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// withRedis runs fn on a Store of the namespace --redis-prefix on the
// deployment --redis names, and closes it and its client.
func (g *globals) withRedis(cmd *cobra.Command, fn func(context.Context, *redisstore.Store) error) error {
	redis.SetLogger(quietRedis{})
	ctx := cmd.Context()
	client, err := g.redis.client(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	// An operator looks at a namespace whatever the server's eviction
	// policy; stats shows it.
	s, err := redisstore.New(ctx, client, &redisstore.Options{Prefix: g.redisPrefix, AllowEviction: true})
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(ctx, s)
}

// redisExplainLine is explain's JSON line for a key of a Redis namespace.
type redisExplainLine struct {
	admin.ID
	Live     bool          `json:"live"`
	Kind     string        `json:"kind,omitempty"`
	Deadline *time.Time    `json:"deadline,omitempty"`
	TTL      time.Duration `json:"ttl_ns,omitempty"`
	Record   *dedup.Record `json:"record,omitempty"`
}

// explainRedis prints what the namespace holds of each ID: a table, or a
// JSON line each.
func explainRedis(cmd *cobra.Command, g *globals, args []string, httpKeys bool, scope string) error {
	return g.withRedis(cmd, func(ctx context.Context, s *redisstore.Store) error {
		for _, a := range args {
			id := []byte(a)
			if httpKeys {
				id = idempotency.StoreKey(scope, a)
			}
			e, live, err := s.Explain(ctx, id)
			if err != nil {
				return err
			}
			l := redisExplainLine{ID: admin.NewID([]byte(a)), Live: live}
			if live {
				l.Kind, l.TTL, l.Record = e.Kind, e.TTL, e.Record
				if !e.Deadline.IsZero() {
					d := e.Deadline.UTC()
					l.Deadline = &d
				}
			}
			if err := printRedisExplanation(cmd, g, []byte(a), l); err != nil {
				return err
			}
		}
		return nil
	})
}

func printRedisExplanation(cmd *cobra.Command, g *globals, id []byte, l redisExplainLine) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(l)
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "ID\t%s\n", displayID(id))
	fmt.Fprintf(w, "live\t%v\n", l.Live)
	if l.Live {
		fmt.Fprintf(w, "kind\t%s\n", l.Kind)
		if l.Deadline != nil {
			fmt.Fprintf(w, "deadline\t%s\n", stamp(*l.Deadline))
			fmt.Fprintf(w, "TTL left\t%v\n", l.TTL)
		} else {
			fmt.Fprintf(w, "TTL left\tnone: the key never expires\n")
		}
	}
	if r := l.Record; r != nil {
		fmt.Fprintf(w, "record\t%s\n", describeRecord(*r, time.Now()))
		fmt.Fprintf(w, "fingerprint\t%x\n", r.Fingerprint)
		fmt.Fprintf(w, "result\t%d bytes\n", len(r.Result))
	}
	fmt.Fprintln(w)
	return w.Flush()
}

// errLimit stops a scan at its --limit.
var errLimit = errors.New("the scan's limit is reached")

// scanRedis writes the marks and records of the namespace that q
// selects, as scan does those of a store. Keys of other Redis types are
// left out: they are not marks (explain shows them).
func scanRedis(cmd *cobra.Command, g *globals, q admin.ScanQuery) error {
	now := time.Now()
	enc := json.NewEncoder(cmd.OutOrStdout())
	n := 0
	return g.withRedis(cmd, func(ctx context.Context, s *redisstore.Store) error {
		err := s.Scan(ctx, q.Prefix, func(e redisstore.Entry) error {
			if e.Kind != redisstore.KindMark && e.Kind != redisstore.KindRecord {
				return nil
			}
			m := dedup.Mark{ID: e.ID, Deadline: e.Deadline, Record: e.Record, Live: true}
			st := admin.State(m, now)
			if q.State != "" && st != q.State {
				return nil
			}
			l := admin.NewMarkLine(m)
			l.Live, l.State = &m.Live, st
			var err error
			if g.output == "json" {
				err = enc.Encode(l)
			} else {
				err = writeMarkLine(cmd.OutOrStdout(), l, now)
			}
			if n++; err == nil && q.Limit > 0 && n >= q.Limit {
				return errLimit
			}
			return err
		})
		if errors.Is(err, errLimit) {
			return nil
		}
		return err
	})
}

// seenRedis prints whether each ID has a live key in the namespace.
func seenRedis(cmd *cobra.Command, g *globals, ids [][]byte) error {
	return g.withRedis(cmd, func(ctx context.Context, s *redisstore.Store) error {
		seen := make([]bool, len(ids))
		for i, id := range ids {
			var err error
			if seen[i], err = s.SeenContext(ctx, id); err != nil {
				return err
			}
		}
		return printIDs(cmd, g, ids, "live", seen)
	})
}

// forgetRedis removes the keys of the IDs and prints whether each had one.
func forgetRedis(cmd *cobra.Command, g *globals, ids [][]byte) error {
	return g.withRedis(cmd, func(ctx context.Context, s *redisstore.Store) error {
		had := make([]bool, len(ids))
		for i, id := range ids {
			var err error
			if had[i], err = s.SeenContext(ctx, id); err != nil {
				return err
			}
			if err := s.ForgetContext(ctx, id); err != nil {
				return err
			}
		}
		return printIDs(cmd, g, ids, "was_live", had)
	})
}

// statsRedis prints the namespace's keys on each primary, and each
// primary's memory and eviction policy.
func statsRedis(cmd *cobra.Command, g *globals) error {
	return g.withRedis(cmd, func(ctx context.Context, s *redisstore.Store) error {
		st, err := s.Stats(ctx)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if g.output == "json" {
			return json.NewEncoder(out).Encode(st)
		}
		w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintf(w, "prefix\t%s\n", displayID([]byte(st.Prefix)))
		fmt.Fprintf(w, "keys\t%d\n", st.Keys)
		fmt.Fprintln(w, "\nprimary\tkeys\tdb keys\tused memory\tmaxmemory\tmaxmemory-policy")
		for _, p := range st.Primaries {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%s\n", p.Addr, p.Keys, p.DBKeys, p.UsedMemory, p.MaxMemory, p.MaxMemoryPolicy)
		}
		return w.Flush()
	})
}
