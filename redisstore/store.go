// Package redisstore is the deduplication API of package dedup on Redis:
// standalone, Sentinel or Cluster, through go-redis's UniversalClient. A
// fleet of processes shares its marks and idempotency records, and code
// written against dedup.Backend changes only its constructor.
//
// # Keys
//
// Each ID is one Redis key, Options.Prefix followed by the ID's bytes. Its
// value is either a plain mark, written by CheckAndMark, or an idempotency
// record, written by Begin; both are strings, so that a mark and a record
// of one ID are the same key and the two APIs agree on what "processed"
// means. A record is one key, so every transition of it is a single-key
// Lua script, atomic on its primary in a Cluster as anywhere else.
//
// Marks are SET key v PX ttl NX. TTLs and leases are rounded up to whole
// milliseconds, the resolution of Redis's expiry, so that nothing expires
// before its time; expiry is the server's. A batch is pipelined, and a
// Cluster client splits the pipeline by the primary of each key's slot.
//
// # Clocks and fencing tokens
//
// The server's TIME is the only clock: lease ends are compared with it
// inside the scripts, and expiry is Redis's own. A fencing token is
//
//	new = max(stored + 1, TIME in microseconds)
//
// where stored is the token of the key's record when one is taken over.
// While a record lives, its tokens grow by that rule alone. Once it is
// gone (released, expired, or lost with the writes a failover did not
// replicate), the next token is the clock's: it is larger than every
// earlier token of the key as long as the clock of the primary issuing it
// reads later than the clock of the one that issued them. That holds on
// one server unless its clock steps back by more than the time between
// the two Begins; across a failover it holds while the clocks of a
// primary and its replica differ by less than the time from the last write
// the old primary acknowledged to the first on the new one, which for an
// automatic failover is at least cluster-node-timeout (or Sentinel's
// down-after-milliseconds). Run NTP on the servers.
//
// # Errors and unknown outcomes
//
// A call that returns an error has not answered; it never says new. A
// call whose context has ended before it starts returns the context's
// error and sends nothing. Over a network an error may come after the write took effect: a timeout, a
// connection lost, a context that ended in flight. The outcome is then
// unknown, and the ID may be marked. A failed mark call takes back the
// marks it made, where Redis still answers; a retry of one that could not
// reads them as duplicates until they expire or are forgotten. A
// concurrent caller may have read such a mark as a duplicate before it
// was taken back, so the caller of a failed call must retry it, as
// at-least-once processing requires anyway.
//
// go-redis retries a command after a lost connection. Each call writes a
// value of its own (a nonce), so that a retried SET that finds the mark
// its first attempt made still answers new, and a retried Begin that
// finds its own lease still acquires it. A mark's SET NX carries no GET,
// so that its reply is the raw command's; the nonce counts how many times
// go-redis sent the call's commands, and only when it sent one more than
// once and found its key held does the call send SET NX GET to learn
// whose the mark is.
//
// # Eviction and replication
//
// An evicted mark makes a duplicate new, so New refuses a server whose
// maxmemory-policy is not noeviction (ErrEvictionPolicy) unless
// Options.AllowEviction accepts it. Replication is asynchronous: a
// failover loses the writes the replica had not received, and with them
// acknowledged marks. Options.MinReplicas makes each write wait until that
// many replicas have it (WAIT), and fail with ErrNotReplicated otherwise.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42300104/dedup"
)

// Errors of this package; bad input gets the root package's sentinels
// (dedup.ErrEmptyID, dedup.ErrInvalidTTL, ...).
var (
	// ErrEvictionPolicy is returned by New for a server whose
	// maxmemory-policy is not noeviction, or whose policy cannot be read
	// (CONFIG disabled), unless Options.AllowEviction is set: an evicted
	// mark turns a duplicate into a new ID. The error names the server and
	// its policy.
	ErrEvictionPolicy = errors.New("redisstore: maxmemory-policy may evict marks")
	// ErrNotReplicated is returned by a write when fewer than
	// Options.MinReplicas replicas acknowledged it within
	// Options.ReplicaTimeout, or when go-redis resent it and it may have
	// taken effect on another connection, which WAIT cannot see. The
	// write was made on the primary, and may or may not survive a
	// failover: its outcome is unknown. A mark call takes back the marks
	// it made, as any failed one does; a Begin's lease stays, unknown to
	// the caller, until it ends.
	ErrNotReplicated = errors.New("redisstore: write not acknowledged by enough replicas")
)

// Options configures a Store. A nil *Options, or a zero field, means the
// documented default. New never writes to the caller's Options.
type Options struct {
	// Prefix is put before every ID to make its key: the namespace of
	// this store. Stores with different prefixes share a server without
	// seeing each other's marks. A prefix holding a Cluster hash tag
	// ("{tenant}:") puts every key in one slot, on one primary. Empty
	// means "dedup:".
	Prefix string
	// DefaultTTL is the TTL of a mark written with ttl 0. Zero means 24h.
	DefaultTTL time.Duration
	// MaxTTL is the largest TTL accepted; a larger one is
	// dedup.ErrInvalidTTL. Zero means dedup.DefaultMaxTTL.
	MaxTTL time.Duration
	// MaxIDSize is the longest ID accepted, in bytes; a longer one is
	// dedup.ErrIDTooLong. Zero means 4096.
	MaxIDSize int
	// MaxValueSize bounds what an idempotency record stores, its
	// fingerprint and result together, in bytes; more is
	// dedup.ErrValueTooLarge. Zero means 1 MiB.
	MaxValueSize int
	// MinReplicas is how many replicas must acknowledge a write (WAIT)
	// before the call returns; fewer within ReplicaTimeout is
	// ErrNotReplicated. Zero means no wait: replication is asynchronous,
	// and a failover can lose acknowledged marks. The client must then be
	// a *redis.Client (standalone or Sentinel) or a *redis.ClusterClient,
	// because WAIT counts the writes of one connection: each call runs on
	// a connection of the key's primary of its own, and a Cluster slot
	// that moves meanwhile fails the call rather than follow it (the next
	// call finds the slot's new primary).
	MinReplicas int
	// ReplicaTimeout is how long a write waits for MinReplicas. Zero means
	// 1s. A batch waits in a pipeline, within the client's ReadTimeout,
	// which must be longer.
	ReplicaTimeout time.Duration
	// AllowEviction accepts a maxmemory-policy other than noeviction, or
	// one New cannot read. Eviction then forgets marks early, making
	// duplicates new. False means New fails with ErrEvictionPolicy.
	AllowEviction bool
}

// The defaults of the Options fields.
const (
	DefaultPrefix         = "dedup:"
	DefaultTTL            = 24 * time.Hour
	DefaultMaxIDSize      = 4096
	DefaultMaxValueSize   = 1 << 20
	DefaultReplicaTimeout = time.Second
)

func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.DefaultTTL == 0 {
		c.DefaultTTL = DefaultTTL
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = dedup.DefaultMaxTTL
	}
	if c.MaxIDSize == 0 {
		c.MaxIDSize = DefaultMaxIDSize
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = DefaultMaxValueSize
	}
	if c.ReplicaTimeout == 0 {
		c.ReplicaTimeout = DefaultReplicaTimeout
	}
	return c
}

// validate reports every problem of o at once.
func (o *Options) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{dedup.ErrInvalidOptions}, args...)...))
	}
	if o.DefaultTTL < 0 || o.MaxTTL < 0 {
		bad("negative DefaultTTL %v or MaxTTL %v", o.DefaultTTL, o.MaxTTL)
	} else if o.DefaultTTL > o.MaxTTL {
		bad("DefaultTTL %v is above MaxTTL %v", o.DefaultTTL, o.MaxTTL)
	}
	if o.MaxIDSize < 0 || o.MaxValueSize < 0 {
		bad("negative MaxIDSize %d or MaxValueSize %d", o.MaxIDSize, o.MaxValueSize)
	}
	if o.MinReplicas < 0 || o.ReplicaTimeout < 0 {
		bad("negative MinReplicas %d or ReplicaTimeout %v", o.MinReplicas, o.ReplicaTimeout)
	}
	return errors.Join(errs...)
}

// Store is a deduplication store on Redis. It is safe for concurrent use,
// by goroutines and by processes: every answer is the server's.
type Store struct {
	client   redis.UniversalClient
	opts     Options
	closed   atomic.Bool
	nonces   nonces
	counters counters
}

var _ dedup.Backend = (*Store)(nil)

// New returns a Store on client, which the caller keeps: Close leaves it
// open. It checks every primary (each of a Cluster's) runs Redis 7.0 or
// later, and that its maxmemory-policy is noeviction (see
// Options.AllowEviction). The policy is read once: a server reconfigured
// later, or a replica promoted with another policy, is not checked again.
func New(ctx context.Context, client redis.UniversalClient, opts *Options) (*Store, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.MinReplicas > 0 {
		switch client.(type) {
		case *redis.Client, *redis.ClusterClient:
		default:
			return nil, fmt.Errorf("%w: MinReplicas needs a *redis.Client or *redis.ClusterClient, not a %T", dedup.ErrInvalidOptions, client)
		}
	}
	s := &Store{client: client, opts: o}
	if err := s.nonces.init(); err != nil {
		return nil, err
	}
	if err := forEachPrimary(ctx, client, s.checkServer); err != nil {
		return nil, err
	}
	return s, nil
}

// forEachPrimary runs fn on every primary of a Cluster, or on the one
// server of another client.
func forEachPrimary(ctx context.Context, client redis.UniversalClient, fn func(context.Context, redis.Cmdable, string) error) error {
	if cc, ok := client.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return fn(ctx, c, c.Options().Addr)
		})
	}
	name := "the server"
	if c, ok := client.(*redis.Client); ok {
		name = c.Options().Addr
	}
	return fn(ctx, client, name)
}

// checkServer checks one primary's version and eviction policy.
func (s *Store) checkServer(ctx context.Context, c redis.Cmdable, name string) error {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return fmt.Errorf("redisstore: reading INFO of %s: %w", name, err)
	}
	if v := infoField(info, "redis_version"); !atLeast7(v) {
		return fmt.Errorf("%w: %s runs Redis %q; 7.0 or later is needed (SET with both NX and GET)", dedup.ErrInvalidOptions, name, v)
	}
	policy, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
	switch {
	case s.opts.AllowEviction:
		return nil
	case err != nil:
		return fmt.Errorf("%w: reading the maxmemory-policy of %s: %v; set AllowEviction to run without knowing it", ErrEvictionPolicy, name, err)
	case policy["maxmemory-policy"] != "noeviction":
		return fmt.Errorf("%w: %s has maxmemory-policy %q, not noeviction", ErrEvictionPolicy, name, policy["maxmemory-policy"])
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

func atLeast7(version string) bool {
	major, _, _ := strings.Cut(version, ".")
	n, err := strconv.Atoi(major)
	return err == nil && n >= 7
}

// Close makes every later call fail with dedup.ErrClosed. It does not
// close the client, which belongs to the caller.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// MaxValueSize is the most an idempotency record may store, its
// fingerprint and result together, in bytes: Options.MaxValueSize.
func (s *Store) MaxValueSize() int { return s.opts.MaxValueSize }

func (s *Store) key(id []byte) string { return s.opts.Prefix + string(id) }

// enter admits a call: it fails on a closed store, and with the
// context's error on an ended context, before anything is sent.
func (s *Store) enter(ctx context.Context) error {
	if s.closed.Load() {
		return dedup.ErrClosed
	}
	return ctx.Err()
}

func (s *Store) checkID(id []byte) error {
	switch {
	case len(id) == 0:
		return dedup.ErrEmptyID
	case len(id) > s.opts.MaxIDSize:
		return fmt.Errorf("%w: %d bytes, the limit is %d", dedup.ErrIDTooLong, len(id), s.opts.MaxIDSize)
	}
	return nil
}

func (s *Store) checkTTL(d time.Duration) (time.Duration, error) {
	switch {
	case d == 0:
		return s.opts.DefaultTTL, nil
	case d < 0 || d > s.opts.MaxTTL:
		return 0, fmt.Errorf("%w: %v is outside (0, %v]", dedup.ErrInvalidTTL, d, s.opts.MaxTTL)
	}
	return d, nil
}

func (s *Store) checkValue(fingerprint, result []byte) error {
	if n := len(fingerprint) + len(result); n > s.opts.MaxValueSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", dedup.ErrValueTooLarge, n, s.opts.MaxValueSize)
	}
	return nil
}

// nonces makes the value each call writes: unique to the call, so that a
// retried command recognizes what its first attempt wrote. A nonce is a
// decimal integer below 2^63, which Redis keeps as an integer rather than
// as a string of its own: a mark costs the server one small object. The
// nonces of one Store are consecutive from a random start, so two Stores'
// meet only if their starts are closer than the calls they make.
type nonces struct {
	base uint64        // random, per Store
	n    atomic.Uint64 // calls so far
}

func (n *nonces) init() error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("redisstore: a random nonce: %w", err)
	}
	n.base = binary.LittleEndian.Uint64(b[:])
	return nil
}

func (n *nonces) next() *nonce {
	v := &nonce{}
	v.len = len(strconv.AppendUint(v.text[:0], (n.base+n.n.Add(1))&math.MaxInt64, 10))
	return v
}

// nonce is the value of one call, and, as the argument of its mark
// commands, counts how many times go-redis sent them: go-redis encodes a
// command's arguments each time it writes the command to a connection, a
// retry's too, and a value of its own type through MarshalBinary. A call
// whose every command was sent once knows that a key it found held was
// not held by its own earlier attempt.
type nonce struct {
	text  [20]byte // decimal, below 2^63
	len   int
	sends atomic.Int64 // MarshalBinary calls: at least the commands sent
	cmds  int64        // the commands that carry it
}

// MarshalBinary is the nonce as go-redis writes it, counted as a send.
func (n *nonce) MarshalBinary() ([]byte, error) {
	n.sends.Add(1)
	return n.text[:n.len], nil
}

// String is the nonce's text, not counted: for the commands that compare
// with it.
func (n *nonce) String() string { return string(n.text[:n.len]) }

// resent reports whether some command that carries n may have been sent
// more than once.
func (n *nonce) resent() bool { return n.sends.Load() > n.cmds }

// conn is what a call runs its commands on: the client, or with
// MinReplicas a connection of the key's primary.
type conn interface {
	redis.Scripter
	Process(ctx context.Context, cmd redis.Cmder) error
}

// onPrimary runs fn on the client, or, with MinReplicas, on a connection
// of key's primary of its own, followed by WAIT on that connection.
// retried says fn's command found the write of its own earlier attempt,
// which go-redis may have made on another connection, so that WAIT on this
// one cannot vouch for it.
func (s *Store) onPrimary(ctx context.Context, key string, fn func(conn) (retried bool, err error)) error {
	if s.opts.MinReplicas == 0 {
		_, err := fn(s.client)
		return err
	}
	node, err := s.primary(ctx, key)
	if err != nil {
		return s.sent(ctx, err)
	}
	cn := node.Conn()
	defer cn.Close()
	retried, err := fn(cn)
	if err != nil {
		return err
	}
	return s.waited(cn.Wait(ctx, s.opts.MinReplicas, s.opts.ReplicaTimeout), retried)
}

// sent passes on the error of a command. On a Cluster, an error that is
// not the server's answer (a refused connection, a timeout), or a
// redirection that MinReplicas does not follow, makes the client reload
// its map of slots, in the background: after a failover, go-redis would
// otherwise keep sending a slot's commands to its dead primary until its
// periodic reload (ClusterOptions.ClusterStateReloadInterval), and every
// call would fail until then.
func (s *Store) sent(ctx context.Context, err error) error {
	cc, ok := s.client.(*redis.ClusterClient)
	if !ok || err == nil {
		return err
	}
	var answer redis.Error
	if !errors.As(err, &answer) || strings.HasPrefix(answer.Error(), "MOVED ") || strings.HasPrefix(answer.Error(), "ASK ") {
		cc.ReloadState(ctx)
	}
	return err
}

// primary returns the client of key's primary.
func (s *Store) primary(ctx context.Context, key string) (*redis.Client, error) {
	switch c := s.client.(type) {
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	case *redis.Client:
		return c, nil
	}
	panic(fmt.Sprintf("redisstore: MinReplicas with a %T, which New refuses", s.client))
}
