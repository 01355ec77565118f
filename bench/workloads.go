package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/seed42300104/dedup"
)

// Workloads lists the store's workloads, in the order Run runs them:
//
//   - new: every ID new;
//   - hot-duplicates: every ID marked just before, still in the memtable;
//   - cold-duplicates: every ID marked before, checkpointed to Pebble and
//     compacted;
//   - segment-mix: new IDs with 0.6% repeats of earlier ones, the mix
//     Segment publishes;
//   - zipf: IDs drawn with Zipf skew ZipfS, mostly repeats of a few;
//   - seen-absent: Seen of IDs never marked, with IDs live marks
//     checkpointed and compacted in the store;
//   - open: Open (and Close) of a store holding IDs live marks, all
//     checkpointed: recovery loads the filter snapshots;
//   - replay: Open (and Close) of a store whose WAL holds IDs records of
//     one mark each after its checkpoint: recovery replays them all;
//   - redis-new: every ID new, through the Redis backend (redisstore) on a
//     redis-server of its own, persisting as the durability asks;
//   - redis-cluster-new: the same on a Cluster of three primaries with a
//     replica each. It runs only when named (see ClusterRows).
//
// The recovery rows count marks recovered per second, in one call.
var Workloads = names(workloads, false)

// ClusterRows lists the rows on a Redis Cluster, workloads and baselines.
// Each starts six redis-server processes and waits for the Cluster to
// form, which takes seconds, so Run's callers leave them out of
// Workloads and Baselines, the default rows, and run them when named.
var ClusterRows = names(slices.Concat(workloads, baselines), true)

var workloads = []row{
	{name: "new", input: (*inputs).marked, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		return storeTrial(cfg, dir, dedup.Options{}, nil, markCalls)
	}},
	{name: "hot-duplicates", input: (*inputs).marked, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		// The memtable holds every mark, so that all are hot.
		return storeTrial(cfg, dir, dedup.Options{MemtableMarks: 2 * cfg.IDs}, func(s *dedup.Store) error {
			return markAll(s, in.marked())
		}, markCalls)
	}},
	{name: "cold-duplicates", input: (*inputs).marked, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		return storeTrial(cfg, dir, dedup.Options{}, func(s *dedup.Store) error {
			if err := markAll(s, in.marked()); err != nil {
				return err
			}
			return s.Compact(context.Background()) // settled, as pebble-get is
		}, markCalls)
	}},
	{name: "segment-mix", input: (*inputs).segment, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		return storeTrial(cfg, dir, dedup.Options{}, nil, markCalls)
	}},
	{name: "zipf", input: (*inputs).zipf, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		return storeTrial(cfg, dir, dedup.Options{}, nil, markCalls)
	}},
	{name: "seen-absent", single: true, input: marksThenAbsent, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		return storeTrial(cfg, dir, dedup.Options{}, func(s *dedup.Store) error {
			if err := markAll(s, in.marked()); err != nil {
				return err
			}
			// No checkpoint or compaction runs while Seen is timed: on
			// two cores one would take a core from the readers.
			return s.Compact(context.Background())
		}, seenCalls)
	}},
	{name: "redis-new", input: (*inputs).marked, setup: func(cfg Config, _ *inputs, dir string) (trial, error) {
		return redisTrial(cfg, dir, false, backendCalls)
	}},
	{name: "redis-cluster-new", cluster: true, input: (*inputs).marked, setup: func(cfg Config, _ *inputs, dir string) (trial, error) {
		return redisTrial(cfg, dir, true, backendCalls)
	}},
	{name: "open", whole: true, input: (*inputs).marked, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		return recoveryTrial(cfg, dir, in.marked(), func(s *dedup.Store) error {
			if err := markAll(s, in.marked()); err != nil {
				return err
			}
			return s.Checkpoint()
		})
	}},
	{name: "replay", whole: true, input: (*inputs).marked, setup: func(cfg Config, in *inputs, dir string) (trial, error) {
		return recoveryTrial(cfg, dir, in.marked(), func(s *dedup.Store) error {
			for _, id := range in.marked() { // a WAL record each
				if _, err := s.CheckAndMark(id, TTL); err != nil {
					return err
				}
			}
			return nil
		})
	}},
}

// recoveryTrial fills a store in dir, untimed, without a checkpoint of its
// own and without fsyncs until Close, and times Opens of it: each call
// opens the store, checks that it holds the marks, and closes it.
func recoveryTrial(cfg Config, dir string, marked [][]byte, fill func(*dedup.Store) error) (trial, error) {
	o := dedup.Options{Sync: dedup.SyncNone, ExpectedMarks: cfg.IDs, MemtableMarks: 2 * cfg.IDs, CacheSize: cfg.CacheSize, Logger: cfg.logger()}
	s, err := dedup.Open(dir, &o)
	if err != nil {
		return trial{}, err
	}
	if err := errors.Join(fill(s), s.Close()); err != nil {
		return trial{}, err
	}
	o.Sync = cfg.Sync
	probe := marked[len(marked)-1]
	return trial{
		call: func(ids [][]byte) (int, error) {
			s, err := dedup.Open(dir, &o)
			if err != nil {
				return 0, err
			}
			seen, err := s.Seen(probe)
			if err := errors.Join(err, s.Close()); err != nil {
				return 0, err
			}
			if !seen {
				return 0, fmt.Errorf("the reopened store lost the mark of %x", probe)
			}
			return len(ids), nil
		},
		marks: func() int { return len(marked) },
		dir:   dir,
		close: func() error { return nil },
	}, nil
}

// marksThenAbsent is the input of the rows that fill an index with marked
// and then look up absent.
func marksThenAbsent(in *inputs) [][]byte {
	in.marked()
	return in.absent()
}

// storeTrial opens a store in dir with o, the run's durability and filters
// sized for the run's IDs, runs fill on it, untimed, and times calls(s).
func storeTrial(cfg Config, dir string, o dedup.Options, fill func(*dedup.Store) error,
	calls func(*dedup.Store) func([][]byte) (int, error)) (trial, error) {
	o.Sync = cfg.Sync
	o.ExpectedMarks = cfg.IDs
	o.CacheSize = cfg.CacheSize
	o.Logger = cfg.logger()
	s, err := dedup.Open(dir, &o)
	if err != nil {
		return trial{}, err
	}
	if fill != nil {
		if err := fill(s); err != nil {
			s.Close()
			return trial{}, err
		}
	}
	return trial{
		call:  calls(s),
		marks: func() int { return int(s.Stats().New) },
		dir:   dir,
		close: s.Close,
	}, nil
}

// markCalls marks with CheckAndMark (one ID) or CheckAndMarkBatch, and
// counts the new IDs.
func markCalls(s *dedup.Store) func([][]byte) (int, error) {
	return func(ids [][]byte) (int, error) {
		if len(ids) == 1 {
			isNew, err := s.CheckAndMark(ids[0], TTL)
			return count(isNew), err
		}
		isNew, err := s.CheckAndMarkBatch(ids, TTL)
		return count(isNew...), err
	}
}

// seenCalls asks Seen of each ID and counts those seen.
func seenCalls(s *dedup.Store) func([][]byte) (int, error) {
	return func(ids [][]byte) (int, error) {
		n := 0
		for _, id := range ids {
			seen, err := s.Seen(id)
			if err != nil {
				return n, err
			}
			n += count(seen)
		}
		return n, nil
	}
}

// markAll marks ids in batches of 1024.
func markAll(s *dedup.Store, ids [][]byte) error {
	for i := 0; i < len(ids); i += 1024 {
		if _, err := s.CheckAndMarkBatch(ids[i:min(i+1024, len(ids))], TTL); err != nil {
			return err
		}
	}
	return nil
}

// count is the number of true values.
func count(vs ...bool) int {
	n := 0
	for _, v := range vs {
		if v {
			n++
		}
	}
	return n
}

// names lists the rows on a Redis Cluster, or the others.
func names(rows []row, cluster bool) []string {
	var out []string
	for _, r := range rows {
		if r.cluster == cluster {
			out = append(out, r.name)
		}
	}
	return out
}
