package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/cockroachdb/pebble/v2"
	pebblebloom "github.com/cockroachdb/pebble/v2/bloom"

	"github.com/seed42300104/dedup"
)

// Baselines lists what the store is compared with, in the order Run runs
// them:
//
//   - bloom-test: bloom/v3 Test of absent IDs, on a filter of the store's
//     size and rate holding the run's IDs: the limit of seen-absent;
//   - bloom-test-and-add: bloom/v3 TestAndAdd of new IDs, behind a mutex
//     when goroutines share it: the limit of the filter part of new;
//   - pebble-batch-insert: raw Pebble batches with Pebble's WAL at the same
//     durability: the limit of the index;
//   - pebble-get: Pebble Get of IDs flushed to its tables and compacted:
//     the limit of cold-duplicates;
//   - pebble-get-then-set: the hand-written dedup, a Pebble Get per ID and
//     a Set if absent, committed per batch at the same durability;
//   - redis-set-nx: SET key 1 PX ttl NX, pipelined per batch, against a
//     redis-server persisting as the durability asks (see redis.go): the
//     hand-written dedup on Redis, and the limit of the redis-new row;
//   - redis-cluster-set-nx: the same on a Cluster of three primaries with
//     a replica each, the limit of redis-cluster-new. It runs only when
//     named (see ClusterRows).
//
// The Pebble baselines are tuned as a user would tune them for this job:
// a bloom filter per table, no compression (random IDs do not compress)
// and 64 MiB memtables. They get as much block cache for their blocks as
// the store's index has (the run's CacheSize), so that a lookup in either
// finds a block in memory as often: Pebble reserves its memtable out of
// the block cache, so the baselines' cache is larger by that memtable,
// which the store's index, filled by ingesting tables, never grows.
var Baselines = names(baselines, false)

var baselines = []row{
	{name: "bloom-test", baseline: true, single: true, input: marksThenAbsent, setup: func(cfg Config, in *inputs, _ string) (trial, error) {
		f := newFilter(cfg.IDs)
		for _, id := range in.marked() {
			f.Add(id)
		}
		return trial{
			call:  bloomTests(f),
			marks: func() int { return cfg.IDs },
			close: func() error { return nil },
		}, nil
	}},
	{name: "bloom-test-and-add", baseline: true, single: true, input: (*inputs).marked, setup: func(cfg Config, in *inputs, _ string) (trial, error) {
		f := newFilter(cfg.IDs)
		var mu sync.Mutex // taken when goroutines share f
		shared := cfg.Concurrency > 1
		return trial{
			call: func(ids [][]byte) (int, error) {
				if shared {
					mu.Lock()
					defer mu.Unlock()
				}
				n := 0
				for _, id := range ids {
					n += count(!f.TestAndAdd(id))
				}
				return n, nil
			},
			marks: func() int { return cfg.IDs },
			close: func() error { return nil },
		}, nil
	}},
	{name: "pebble-batch-insert", baseline: true, input: (*inputs).marked, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		return pebbleTrial(cfg, dir, nil, pebbleInsert(cfg))
	}},
	{name: "pebble-get", baseline: true, single: true, input: (*inputs).marked, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		fill := func(db *pebble.DB) error {
			for i := 0; i < cfg.IDs; i += 1024 {
				b := db.NewBatch()
				for _, id := range in.marked()[i:min(i+1024, cfg.IDs)] {
					b.Set(id, pebbleValue, nil)
				}
				if err := b.Commit(pebble.NoSync); err != nil {
					return err
				}
			}
			return settlePebble(db)
		}
		return pebbleTrial(cfg, dir, fill, pebbleGets)
	}},
	{name: "pebble-get-then-set", baseline: true, input: (*inputs).marked, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		return pebbleTrial(cfg, dir, nil, func(db *pebble.DB, ids [][]byte) (int, error) {
			b := db.NewBatch()
			defer b.Close()
			for _, id := range ids {
				found, err := pebbleHas(db, id)
				if err != nil {
					return 0, err
				}
				if !found {
					if err := b.Set(id, pebbleValue, nil); err != nil {
						return 0, err
					}
				}
			}
			return int(b.Count()), b.Commit(writeOptions(cfg))
		})
	}},
	{name: "redis-set-nx", baseline: true, input: (*inputs).marked, setup: func(cfg Config, _ *inputs, dir string) (trial, error) {
		return redisTrial(cfg, dir, false, rawSetNX)
	}},
	{name: "redis-cluster-set-nx", baseline: true, cluster: true, input: (*inputs).marked, setup: func(cfg Config, _ *inputs, dir string) (trial, error) {
		return redisTrial(cfg, dir, true, rawSetNX)
	}},
}

// newFilter is a bloom/v3 filter of the size and rate the store gives a
// generation sized for n marks.
func newFilter(n int) *bloom.BloomFilter {
	return bloom.NewWithEstimates(uint(n), 0.01)
}

// bloomTests tests each ID in f and counts those it may hold.
func bloomTests(f *bloom.BloomFilter) func([][]byte) (int, error) {
	return func(ids [][]byte) (int, error) {
		n := 0
		for _, id := range ids {
			n += count(f.Test(id))
		}
		return n, nil
	}
}

// pebbleValue is the value of the Pebble baselines' keys: 8 bytes, as the
// store's index holds a deadline and an LSN per key.
var pebbleValue = make([]byte, 8)

// writeOptions is Pebble's durability closest to the store's: Sync for
// SyncAlways, and NoSync otherwise, as Pebble has no timed fsync.
func writeOptions(cfg Config) *pebble.WriteOptions {
	if cfg.Sync == dedup.SyncAlways {
		return pebble.Sync
	}
	return pebble.NoSync
}

// pebbleTrial opens a tuned Pebble in dir, runs fill on
// it, untimed, and times call.
func pebbleTrial(cfg Config, dir string, fill func(*pebble.DB) error, call func(*pebble.DB, [][]byte) (int, error)) (trial, error) {
	db, err := openPebble(dir, pebbleCacheSize(cfg))
	if err != nil {
		return trial{}, err
	}
	if fill != nil {
		if err := fill(db); err != nil {
			db.Close()
			return trial{}, err
		}
	}
	return trial{
		call:  func(ids [][]byte) (int, error) { return call(db, ids) },
		marks: func() int { return cfg.IDs },
		dir:   dir,
		close: db.Close,
	}, nil
}

// pebbleMemTableSize is the memtable size of the Pebble baselines.
const pebbleMemTableSize = 64 << 20

// pebbleCacheSize is the block cache of the Pebble baselines in a run of
// cfg: the store's, and the memtable Pebble reserves out of it.
func pebbleCacheSize(cfg Config) int64 { return cacheSize(cfg) + pebbleMemTableSize }

// openPebble opens the tuned Pebble of the baselines in dir, with a block
// cache of cacheBytes.
func openPebble(dir string, cacheBytes int64) (*pebble.DB, error) {
	cache := pebble.NewCache(cacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{Cache: cache, MemTableSize: pebbleMemTableSize, Logger: silent{}}
	opts.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = pebblebloom.FilterPolicy(10)
	}
	return pebble.Open(dir, opts)
}

// pebbleInsert sets each ID in a batch committed at cfg's durability.
func pebbleInsert(cfg Config) func(*pebble.DB, [][]byte) (int, error) {
	return func(db *pebble.DB, ids [][]byte) (int, error) {
		b := db.NewBatch()
		defer b.Close()
		for _, id := range ids {
			if err := b.Set(id, pebbleValue, nil); err != nil {
				return 0, err
			}
		}
		return len(ids), b.Commit(writeOptions(cfg))
	}
}

// settlePebble flushes db's memtables to tables, where cold marks are,
// and compacts them all, as the store's read rows compact the store. It
// returns once Pebble has deleted the tables the compaction replaced, as
// the store's Compact does, so that both are measured settled.
func settlePebble(db *pebble.DB) error {
	if err := db.Flush(); err != nil {
		return err
	}
	// The IDs are 16 bytes or a 36-byte UUID string, all below 17 bytes
	// of 0xff.
	if err := db.Compact(context.Background(), []byte{0}, bytes.Repeat([]byte{0xff}, 17), true); err != nil {
		return err
	}
	for {
		m := db.Metrics()
		if m.Table.Local.ObsoleteCount+m.Table.Local.ZombieCount == 0 {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pebbleGets looks each ID up in db and counts those it holds.
func pebbleGets(db *pebble.DB, ids [][]byte) (int, error) {
	n := 0
	for _, id := range ids {
		found, err := pebbleHas(db, id)
		if err != nil {
			return n, err
		}
		n += count(found)
	}
	return n, nil
}

// pebbleHas reports whether db holds key.
func pebbleHas(db *pebble.DB, key []byte) (bool, error) {
	_, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}

// silent drops Pebble's informational logging.
type silent struct{}

func (silent) Infof(string, ...any)              {}
func (silent) Errorf(string, ...any)             {}
func (silent) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
