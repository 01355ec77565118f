// What operators ask of a namespace: Explain, Scan and Stats.

package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42300104/dedup"
)

// The kinds of Entry: a mark of CheckAndMark, or an idempotency record of
// Begin. A key of the namespace that is not a string has its Redis type
// (hash, list, ...) as its kind: something else wrote it.
const (
	KindMark   = "mark"
	KindRecord = "record"
)

// Entry is what the namespace holds of one ID.
type Entry struct {
	// ID is the key without Options.Prefix.
	ID []byte
	// Kind is KindMark, KindRecord, or the Redis type of a key this
	// package did not write.
	Kind string
	// TTL is the time the key has left, from PTTL; negative for a key
	// with no expiry, which this package never writes.
	TTL time.Duration
	// Deadline is when the key expires, by the server's clock; zero for
	// a key with no expiry, or of a kind this package did not write.
	Deadline time.Time
	// Record is the key's idempotency record; nil for any other kind.
	Record *dedup.Record
}

// Explain returns what the namespace holds of id, and false if it holds
// no key for it.
func (s *Store) Explain(ctx context.Context, id []byte) (Entry, bool, error) {
	if err := s.enter(ctx); err != nil {
		return Entry{}, false, err
	}
	if err := s.checkID(id); err != nil {
		return Entry{}, false, err
	}
	k := s.key(id)
	res, err := recordScript.Run(ctx, s.client, []string{k}).Slice()
	var answer redis.Error
	if errors.As(err, &answer) && strings.HasPrefix(answer.Error(), "WRONGTYPE") {
		return s.foreign(ctx, s.client, id, k)
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("redisstore: Explain %q: %w", id, s.sent(ctx, err))
	}
	if len(res) == 0 {
		return Entry{}, false, nil
	}
	e, err := entry(id, k, res)
	return e, err == nil, err
}

// entry decodes recordScript's {value, TIME seconds, TIME microseconds,
// PTTL} of key, the key of id.
func entry(id []byte, key string, res []any) (Entry, error) {
	r, err := decodeReply(key, res)
	if err != nil {
		return Entry{}, err
	}
	pttl, _ := res[3].(int64)
	e := Entry{ID: id, Kind: KindMark, TTL: time.Duration(pttl) * time.Millisecond, Deadline: r.Deadline}
	if v, _ := res[0].(string); strings.HasPrefix(v, recordMagic) {
		e.Kind, e.Record = KindRecord, &r
	}
	return e, nil
}

// foreign describes a key that is not a string, by its type and TTL.
func (s *Store) foreign(ctx context.Context, c redis.Cmdable, id []byte, key string) (Entry, bool, error) {
	var typ *redis.StatusCmd
	var pttl *redis.DurationCmd
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		typ, pttl = p.Type(ctx, key), p.PTTL(ctx, key)
		return nil
	})
	if err != nil {
		return Entry{}, false, fmt.Errorf("redisstore: TYPE and PTTL of %q: %w", key, s.sent(ctx, err))
	}
	if typ.Val() == "none" {
		return Entry{}, false, nil
	}
	return Entry{ID: id, Kind: typ.Val(), TTL: pttl.Val()}, true, nil
}

// scanPage is how many keys one SCAN asks for, and so how many values
// one pipeline reads.
const scanPage = 1000

// Scan calls fn for each key of the namespace whose ID starts with
// prefix, on every primary, in no promised order, until fn returns an
// error, which Scan returns. It walks the keyspace with SCAN, so it sees
// every key that lives from its start to its end, and may or may not see
// those written or removed meanwhile; it yields a key once, remembering
// the keys it yielded on a primary (their memory is that of its share of
// the namespace's IDs), as SCAN may return one twice. It reads the whole keyspace of each
// primary, not only the namespace: it is for operators, not for a hot
// path.
func (s *Store) Scan(ctx context.Context, prefix []byte, fn func(Entry) error) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	nodes, err := s.primaries(ctx)
	if err != nil {
		return err
	}
	match := globEscape(s.opts.Prefix+string(prefix)) + "*"
	for _, node := range nodes {
		err := s.scanKeys(ctx, node, match, func(keys []string) error { return s.readPage(ctx, node, keys, fn) })
		if err != nil {
			return err
		}
	}
	return nil
}

// scanKeys walks the keys of node that match, with SCAN, and gives each
// page of them to page, each key once.
func (s *Store) scanKeys(ctx context.Context, node redis.Cmdable, match string, page func(keys []string) error) error {
	seen := make(map[string]struct{})
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, match, scanPage).Result()
		if err != nil {
			return fmt.Errorf("redisstore: SCAN: %w", s.sent(ctx, err))
		}
		fresh := keys[:0]
		for _, k := range keys {
			if _, ok := seen[k]; !ok {
				seen[k] = struct{}{}
				fresh = append(fresh, k)
			}
		}
		if err := page(fresh); err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// readPage reads the keys of one SCAN page, pipelined, and yields those
// still there.
func (s *Store) readPage(ctx context.Context, node redis.Cmdable, keys []string, fn func(Entry) error) error {
	cmds := make([]*redis.Cmd, len(keys))
	_, _ = node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = recordScript.Eval(ctx, p, []string{k}) // a pipeline cannot fall back from EVALSHA
		}
		return nil
	}) // the errors are the commands'
	for i, k := range keys {
		id := []byte(strings.TrimPrefix(k, s.opts.Prefix))
		res, err := cmds[i].Slice()
		var e Entry
		var answer redis.Error
		switch {
		case errors.As(err, &answer) && strings.HasPrefix(answer.Error(), "WRONGTYPE"):
			var ok bool
			if e, ok, err = s.foreign(ctx, node, id, k); err != nil || !ok {
				continue
			}
		case err != nil:
			return fmt.Errorf("redisstore: reading %q: %w", k, s.sent(ctx, err))
		case len(res) == 0:
			continue // gone since SCAN found it
		default:
			if e, err = entry(id, k, res); err != nil {
				return err
			}
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// globEscape escapes the characters SCAN's MATCH pattern gives a meaning.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		switch c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

// primaries returns the client of every primary: a Cluster's, or the one
// server of another client.
func (s *Store) primaries(ctx context.Context) ([]redis.Cmdable, error) {
	cc, ok := s.client.(*redis.ClusterClient)
	if !ok {
		return []redis.Cmdable{s.client}, nil
	}
	var mu sync.Mutex
	var nodes []redis.Cmdable
	err := cc.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		nodes = append(nodes, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: the Cluster's primaries: %w", s.sent(ctx, err))
	}
	return nodes, nil
}

// Stats is what each primary holds of the namespace, and how it is
// configured.
type Stats struct {
	// Prefix is the namespace's, Options.Prefix.
	Prefix string `json:"prefix"`
	// Keys is the namespace's keys on every primary together.
	Keys int64 `json:"keys"`
	// Primaries are the servers, one for a standalone server or a
	// Sentinel's primary, each primary of a Cluster.
	Primaries []PrimaryStats `json:"primaries"`
}

// PrimaryStats is one primary's part of Stats.
type PrimaryStats struct {
	// Addr is the primary's host:port.
	Addr string `json:"addr"`
	// Keys is the namespace's keys on it, counted with SCAN.
	Keys int64 `json:"keys"`
	// DBKeys is every key of its database, the namespace's and others'.
	DBKeys int64 `json:"db_keys"`
	// UsedMemory and MaxMemory are INFO's used_memory and maxmemory, in
	// bytes; MaxMemory 0 means no limit.
	UsedMemory int64 `json:"used_memory"`
	MaxMemory  int64 `json:"maxmemory"`
	// MaxMemoryPolicy is its maxmemory-policy: anything but noeviction
	// may evict marks (see ErrEvictionPolicy).
	MaxMemoryPolicy string `json:"maxmemory_policy"`
}

// Stats counts the namespace's keys on each primary, by a SCAN of its
// whole keyspace as Scan does, and reads the primary's memory and
// eviction policy.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	if err := s.enter(ctx); err != nil {
		return Stats{}, err
	}
	nodes, err := s.primaries(ctx)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Prefix: s.opts.Prefix}
	match := globEscape(s.opts.Prefix) + "*"
	for _, node := range nodes {
		p, err := s.primaryStats(ctx, node, match)
		if err != nil {
			return Stats{}, err
		}
		st.Keys += p.Keys
		st.Primaries = append(st.Primaries, p)
	}
	return st, nil
}

func (s *Store) primaryStats(ctx context.Context, node redis.Cmdable, match string) (PrimaryStats, error) {
	p := PrimaryStats{Addr: "the server"}
	if c, ok := node.(*redis.Client); ok {
		p.Addr = c.Options().Addr
	}
	err := s.scanKeys(ctx, node, match, func(keys []string) error {
		p.Keys += int64(len(keys))
		return nil
	})
	if err != nil {
		return p, fmt.Errorf("%s: %w", p.Addr, err)
	}
	info, err := node.Info(ctx, "memory", "keyspace").Result()
	if err != nil {
		return p, fmt.Errorf("redisstore: INFO of %s: %w", p.Addr, s.sent(ctx, err))
	}
	p.UsedMemory, _ = strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
	p.MaxMemory, _ = strconv.ParseInt(infoField(info, "maxmemory"), 10, 64)
	p.MaxMemoryPolicy = infoField(info, "maxmemory_policy")
	if p.DBKeys, err = node.DBSize(ctx).Result(); err != nil {
		return p, fmt.Errorf("redisstore: DBSIZE of %s: %w", p.Addr, s.sent(ctx, err))
	}
	return p, nil
}
