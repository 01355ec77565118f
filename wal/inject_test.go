package wal

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scriptSyncer is a syncer whose completions the test delivers: start
// queues the sync, and the test says how it ends.
type scriptSyncer struct {
	done    func(completion)
	started chan syncReq // the sync under way, once started
}

func (s *scriptSyncer) start(f vfs.File, tag uint64) error {
	s.started <- syncReq{f, tag}
	return nil
}

func (s *scriptSyncer) poll()        {}
func (s *scriptSyncer) close() error { return nil }

// injection is how an injected sync ends. complete returns the completion
// to report for the sync r, prev being the tag of the sync before it; it
// syncs r.f itself only where the completion says the sync succeeded.
type injection struct {
	name     string
	complete func(t *testing.T, r syncReq, prev uint64) completion
	cause    error // what the log fails with; nil if it carries on
}

func syncedFine(t *testing.T, r syncReq, _ uint64) completion {
	require.NoError(t, r.f.SyncData())
	return completion{r.tag, nil}
}

var injections = []injection{
	{name: "success", complete: syncedFine},
	{name: "EIO", cause: syscall.EIO, complete: func(_ *testing.T, r syncReq, _ uint64) completion {
		return completion{r.tag, fmt.Errorf("fdatasync: %w", syscall.EIO)}
	}},
	{name: "short: fewer records than the sync covers", cause: errStraySync, complete: func(_ *testing.T, r syncReq, _ uint64) completion {
		return completion{r.tag - 1, nil}
	}},
	{name: "late: the sync before, again", cause: errStraySync, complete: func(_ *testing.T, _ syncReq, prev uint64) completion {
		return completion{prev, nil}
	}},
	{name: "beyond: a record the sync does not cover", cause: errStraySync, complete: func(_ *testing.T, r syncReq, _ uint64) completion {
		return completion{r.tag + 1, nil}
	}},
}

// injectedRun is what runInjected saw.
type injectedRun struct {
	mem      *vfs.MemFS
	log      *Log
	appended []entry
	acked    uint64 // the highest LSN whose Wait returned nil
	syncs    int    // syncs the syncer ran
	failedAt uint64 // the first LSN appended to the failed sync, 0 if none failed
}

// injectedRounds is how many rounds runInjected appends: enough for the
// log to rotate its 4 KiB segments and prepare spares.
const injectedRounds = 12

// runInjected runs rounds of three AppendStart calls on a log whose syncs
// the test runs: the first record of a round starts a sync, the other two
// are appended while it runs, and the sync's completion starts theirs.
// Every sync succeeds but the at-th (1-based), which ends as inj says.
func runInjected(t *testing.T, inj injection, at int) injectedRun {
	t.Helper()
	mem := vfs.NewCrashableMem()
	s := &scriptSyncer{started: make(chan syncReq, 1)}
	opts := Options{FS: mem, SegmentSize: 4096, Direct: true, Boot: "boot-1",
		testSyncer: func(done func(completion)) syncer { s.done = done; return s }}
	l, err := Open(logDir, opts, 0, func(uint64, []byte) error { return nil })
	require.NoError(t, err)
	run := injectedRun{mem: mem, log: l}
	var prev uint64
	for round := 0; round < injectedRounds && l.Err() == nil; round++ {
		var lsns []uint64
		for i := range 3 {
			p := testPayload(3*round + i)
			lsn, err := l.AppendStart(p)
			if err != nil {
				require.ErrorIs(t, err, inj.cause, "AppendStart after the failure")
				break
			}
			lsns = append(lsns, lsn)
			run.appended = append(run.appended, entry{lsn, string(p)})
		}
		for !settled(l, lsns[len(lsns)-1]) {
			r := <-s.started
			run.syncs++
			c := syncedFine
			if run.syncs == at {
				c = inj.complete
				l.mu.Lock()
				run.failedAt = l.synced + 1
				l.mu.Unlock()
			}
			s.done(c(t, r, prev))
			prev = r.tag
		}
		for _, lsn := range lsns {
			if err := l.Wait(lsn); err == nil {
				run.acked = max(run.acked, lsn)
			} else {
				require.ErrorIs(t, err, inj.cause, "Wait(%d)", lsn)
			}
		}
	}
	if inj.cause == nil || run.syncs < at {
		run.failedAt = 0
	}
	return run
}

// settled reports whether the records up to lsn are synced, or the log
// has failed.
func settled(l *Log, lsn uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.synced >= lsn || l.err != nil
}

// TestInjectedSyncCompletions ends each sync of a workload in turn in
// every way a completion can come (success, EIO, a short one, a late
// repeat of the sync before, one naming records not covered): a failure
// makes the log fail-stop and records it in the FAILED marker, so that
// Open refuses the log in the same boot; and no record is acknowledged
// that a power loss right after would lose. The workload's completions
// arrive after later records were appended, which they must not
// acknowledge.
func TestInjectedSyncCompletions(t *testing.T) {
	counted := runInjected(t, injections[0], 0)
	require.NoError(t, counted.log.Close())
	require.Greater(t, counted.log.Segments(), 2, "the workload must rotate segments")
	total := counted.syncs
	t.Logf("the workload runs %d syncs in the syncer", total)

	for _, inj := range injections {
		for at := 1; at <= total; at++ {
			t.Run(fmt.Sprintf("%s/sync=%d", inj.name, at), func(t *testing.T) {
				run := runInjected(t, inj, at)
				l := run.log
				afterPowerLoss := run.mem.CrashClone(vfs.CrashCloneCfg{})
				if inj.cause == nil {
					require.NoError(t, l.Close())
					assert.Equal(t, run.appended[len(run.appended)-1].lsn, run.acked, "every record acknowledged")
				} else {
					require.NotZero(t, run.failedAt, "the injected sync ran")
					assert.ErrorIs(t, l.Err(), inj.cause, "the log is fail-stop")
					assert.Less(t, run.acked, run.failedAt, "no record of the failed sync is acknowledged")
					_, err := l.Append([]byte("after"))
					assert.ErrorIs(t, err, inj.cause, "Append after the failure")
					assert.ErrorIs(t, l.Close(), inj.cause, "Close returns the failure")
					_, _, err = tryOpen(afterPowerLoss, Options{Boot: "boot-1"}, 0)
					require.ErrorIs(t, err, ErrFailedSync, "Open in the boot of the failure")
				}
				reopened, got, err := tryOpen(afterPowerLoss, Options{Boot: "boot-2"}, 0)
				require.NoError(t, err, "Open after a power loss")
				require.NoError(t, reopened.Close())
				requirePrefix(t, run.appended, got, run.acked)
			})
		}
	}
}

// requirePrefix checks a replay after a crash: the records appended
// before it, in order, up to at least the last acknowledged one.
func requirePrefix(t *testing.T, appended, got []entry, acked uint64) {
	t.Helper()
	require.LessOrEqual(t, len(got), len(appended), "replayed records never appended")
	requireReplay(t, appended[:len(got)], got, "the replay is a prefix of what was appended")
	assert.GreaterOrEqual(t, uint64(len(got)), acked, "acknowledged records lost: replayed %d, acknowledged up to LSN %d", len(got), acked)
}
