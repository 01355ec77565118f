package dedup_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

func openRecords(t *testing.T) (*dedup.Store, *ttl.Fake, *dedup.Options) {
	t.Helper()
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{FS: vfs.NewMem(), Clock: clock}
	return storetest.OpenAt(t, "store", opts), clock, opts
}

func begin(t *testing.T, s *dedup.Store, key, fp string, lease time.Duration) dedup.Claim {
	t.Helper()
	c, err := s.Begin([]byte(key), []byte(fp), lease, time.Hour)
	require.NoError(t, err)
	return c
}

// TestBeginOutcomes walks one key through its life: acquired, in progress
// for everyone else, a mismatch for another request, completed with its
// result, and Complete and Release refused to any other token.
func TestBeginOutcomes(t *testing.T) {
	s, clock, _ := openRecords(t)
	now := clock.Now()

	c := begin(t, s, "pay-1", "req-A", time.Minute)
	require.Equal(t, dedup.Acquired, c.Outcome)
	assert.NotZero(t, c.Token)
	assert.Equal(t, dedup.StateInProgress, c.State)
	assert.True(t, c.LeaseEnds.Equal(now.Add(time.Minute)), "lease ends %v", c.LeaseEnds)
	assert.True(t, c.Deadline.Equal(now.Add(time.Hour)), "deadline %v", c.Deadline)
	token := c.Token

	again := begin(t, s, "pay-1", "req-A", time.Minute)
	assert.Equal(t, dedup.InProgress, again.Outcome)
	assert.Equal(t, token, again.Token, "InProgress names the holder's token")
	assert.Equal(t, dedup.Mismatch, begin(t, s, "pay-1", "req-B", time.Minute).Outcome)
	assert.Equal(t, dedup.Mismatch, begin(t, s, "pay-1", "", time.Minute).Outcome, "no fingerprint is another fingerprint")

	assert.ErrorIs(t, s.Complete([]byte("pay-1"), token+1, []byte("x")), dedup.ErrStaleToken)
	assert.ErrorIs(t, s.Release([]byte("pay-1"), token+1), dedup.ErrStaleToken)
	require.NoError(t, s.Complete([]byte("pay-1"), token, []byte("receipt-1")))
	require.NoError(t, s.Complete([]byte("pay-1"), token, []byte("ignored")), "completing twice is idempotent")

	done := begin(t, s, "pay-1", "req-A", time.Minute)
	assert.Equal(t, dedup.Completed, done.Outcome)
	assert.Equal(t, "receipt-1", string(done.Result))
	assert.Equal(t, token, done.Token)
	mismatch := begin(t, s, "pay-1", "req-B", time.Minute)
	assert.Equal(t, dedup.Mismatch, mismatch.Outcome)
	assert.Nil(t, mismatch.Result, "a mismatch does not see the result")
	assert.ErrorIs(t, s.Release([]byte("pay-1"), token), dedup.ErrStaleToken, "completed work cannot be released")

	r, ok, err := s.Record([]byte("pay-1"))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dedup.StateCompleted, r.State)
	assert.Equal(t, "req-A", string(r.Fingerprint))
	assert.Equal(t, "receipt-1", string(r.Result))
}

// TestReleaseLeavesNoMark checks "mark only on success": after Release the
// key is free, unseen, and the next Begin gets a newer token.
func TestReleaseLeavesNoMark(t *testing.T) {
	s, _, _ := openRecords(t)
	first := begin(t, s, "job", "", time.Minute)
	require.NoError(t, s.Release([]byte("job"), first.Token))
	seen, err := s.Seen([]byte("job"))
	require.NoError(t, err)
	assert.False(t, seen)
	assert.ErrorIs(t, s.Release([]byte("job"), first.Token), dedup.ErrStaleToken, "released twice")
	assert.ErrorIs(t, s.Complete([]byte("job"), first.Token, nil), dedup.ErrStaleToken, "completed after release")

	second := begin(t, s, "job", "", time.Minute)
	require.Equal(t, dedup.Acquired, second.Outcome)
	assert.Greater(t, second.Token, first.Token)
}

// TestExpiredLeaseIsTakenOver checks that a crashed owner's key can be
// taken over once its lease ends, that the old token is then fenced off,
// and that without a takeover the old owner may still complete.
func TestExpiredLeaseIsTakenOver(t *testing.T) {
	s, clock, _ := openRecords(t)
	old := begin(t, s, "k", "fp", time.Minute)
	clock.Advance(time.Minute - time.Nanosecond)
	assert.Equal(t, dedup.InProgress, begin(t, s, "k", "fp", time.Minute).Outcome, "the lease is live to its end")
	clock.Advance(time.Nanosecond)

	late := begin(t, s, "late", "", time.Minute)
	clock.Advance(2 * time.Minute)
	require.NoError(t, s.Complete([]byte("late"), late.Token, []byte("ok")), "no one took it over")

	taken := begin(t, s, "k", "fp", time.Minute)
	require.Equal(t, dedup.Acquired, taken.Outcome)
	assert.Greater(t, taken.Token, old.Token)
	assert.ErrorIs(t, s.Complete([]byte("k"), old.Token, []byte("stale")), dedup.ErrStaleToken)
	assert.ErrorIs(t, s.Release([]byte("k"), old.Token), dedup.ErrStaleToken)
	require.NoError(t, s.Complete([]byte("k"), taken.Token, []byte("fresh")))
	assert.Equal(t, "fresh", string(begin(t, s, "k", "fp", time.Minute).Result))
}

// TestRecordsExpire checks that a completed record lives for its TTL and
// that the key is then free again.
func TestRecordsExpire(t *testing.T) {
	s, clock, _ := openRecords(t)
	c := begin(t, s, "k", "", time.Minute)
	clock.Advance(30 * time.Minute)
	require.NoError(t, s.Complete([]byte("k"), c.Token, []byte("r")))
	clock.Advance(time.Hour - time.Nanosecond)
	assert.Equal(t, dedup.Completed, begin(t, s, "k", "", time.Minute).Outcome, "kept for its TTL from Complete")
	clock.Advance(time.Nanosecond)
	assert.Equal(t, dedup.Acquired, begin(t, s, "k", "", time.Minute).Outcome)
}

// TestRecordsSurviveReopen checks records in every place they can be: the
// WAL tail and Pebble, across Close and Open; and that tokens keep growing
// after a reopen.
func TestRecordsSurviveReopen(t *testing.T) {
	for _, checkpoint := range []bool{false, true} {
		t.Run(fmt.Sprintf("checkpoint=%t", checkpoint), func(t *testing.T) {
			s, _, opts := openRecords(t)
			done := begin(t, s, "done", "fp", time.Minute)
			require.NoError(t, s.Complete([]byte("done"), done.Token, []byte("result")))
			open := begin(t, s, "open", "fp", time.Minute)
			if checkpoint {
				require.NoError(t, s.Checkpoint())
			}
			s = storetest.Reopen(t, s, "store", opts)
			c := begin(t, s, "done", "fp", time.Minute)
			assert.Equal(t, dedup.Completed, c.Outcome)
			assert.Equal(t, "result", string(c.Result))
			c = begin(t, s, "open", "fp", time.Minute)
			assert.Equal(t, dedup.InProgress, c.Outcome)
			assert.Equal(t, open.Token, c.Token)
			assert.Greater(t, begin(t, s, "new", "", time.Minute).Token, open.Token)
			require.NoError(t, s.Complete([]byte("open"), open.Token, []byte("later")))
		})
	}
}

// TestPlainMarkIsCompletedWork checks that the two APIs agree: a key
// marked by CheckAndMark is completed work without a result, and a key
// begun is not new to CheckAndMark.
func TestPlainMarkIsCompletedWork(t *testing.T) {
	s, _, _ := openRecords(t)
	_, err := s.CheckAndMark([]byte("marked"), 0)
	require.NoError(t, err)
	c := begin(t, s, "marked", "fp", time.Minute)
	assert.Equal(t, dedup.Completed, c.Outcome)
	assert.Nil(t, c.Result)
	_, ok, err := s.Record([]byte("marked"))
	require.NoError(t, err)
	assert.False(t, ok, "a plain mark has no record")

	begin(t, s, "begun", "", time.Minute)
	isNew, err := s.CheckAndMark([]byte("begun"), 0)
	require.NoError(t, err)
	assert.False(t, isNew)
	_, ok, err = s.Record([]byte("begun"))
	require.NoError(t, err)
	assert.True(t, ok, "CheckAndMark left the record alone")
}

// TestCompleteBoundsFingerprintAndResultTogether checks that MaxValueSize
// bounds what a record stores, its fingerprint and result together, at
// Complete as at Begin.
func TestCompleteBoundsFingerprintAndResultTogether(t *testing.T) {
	s, _, _ := openRecords(t)
	limit := s.MaxValueSize()
	fp := strings.Repeat("f", 100)
	c := begin(t, s, "k", fp, time.Minute)
	require.Equal(t, dedup.Acquired, c.Outcome)

	assert.ErrorIs(t, s.Complete([]byte("k"), c.Token, make([]byte, limit-len(fp)+1)), dedup.ErrValueTooLarge)
	r, ok, err := s.Record([]byte("k"))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dedup.StateInProgress, r.State, "a refused Complete changes nothing")

	require.NoError(t, s.Complete([]byte("k"), c.Token, make([]byte, limit-len(fp))), "exactly the limit")
	done := begin(t, s, "k", fp, time.Minute)
	assert.Equal(t, dedup.Completed, done.Outcome)
	assert.Equal(t, limit-len(fp), len(done.Result), "the result kept whole")
}

// TestRecordBadInput checks that bad input gets a named error and leaves
// the record as it was.
func TestRecordBadInput(t *testing.T) {
	s, _, _ := openRecords(t)
	c := begin(t, s, "k", "", time.Minute)
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"empty key", func() error { _, err := s.Begin(nil, nil, time.Minute, 0); return err }, dedup.ErrEmptyID},
		{"zero lease", func() error { _, err := s.Begin([]byte("x"), nil, 0, 0); return err }, dedup.ErrInvalidTTL},
		{"lease past TTL", func() error { _, err := s.Begin([]byte("x"), nil, 2*time.Hour, time.Hour); return err }, dedup.ErrInvalidTTL},
		{"negative TTL", func() error { _, err := s.Begin([]byte("x"), nil, time.Minute, -time.Hour); return err }, dedup.ErrInvalidTTL},
		{"huge fingerprint", func() error { _, err := s.Begin([]byte("x"), make([]byte, 2<<20), time.Minute, 0); return err }, dedup.ErrValueTooLarge},
		{"huge result", func() error { return s.Complete([]byte("k"), c.Token, make([]byte, 2<<20)) }, dedup.ErrValueTooLarge},
		{"empty key to Complete", func() error { return s.Complete(nil, c.Token, nil) }, dedup.ErrEmptyID},
		{"empty key to Release", func() error { return s.Release(nil, c.Token) }, dedup.ErrEmptyID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.ErrorIs(t, tt.call(), tt.want)
		})
	}
	r, ok, err := s.Record([]byte("k"))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dedup.StateInProgress, r.State, "a refused Complete changes nothing")
	seen, err := s.Seen([]byte("x"))
	require.NoError(t, err)
	assert.False(t, seen, "a refused Begin marks nothing")
}

// TestConcurrentBeginOneWinner races Begins on one key: exactly one
// acquires; the others see it in progress, or completed once the winner
// completes.
func TestConcurrentBeginOneWinner(t *testing.T) {
	s := storetest.OpenAt(t, t.TempDir(), nil)
	for round := range 20 {
		key := fmt.Appendf(nil, "key-%d", round)
		var wg sync.WaitGroup
		outcomes := make([]dedup.Claim, 16)
		for g := range outcomes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := s.Begin(key, []byte("fp"), time.Minute, 0)
				assert.NoError(t, err)
				if c.Outcome == dedup.Acquired {
					assert.NoError(t, s.Complete(key, c.Token, []byte("r")))
				}
				outcomes[g] = c
			}()
		}
		wg.Wait()
		acquired := 0
		for _, c := range outcomes {
			switch c.Outcome {
			case dedup.Acquired:
				acquired++
			case dedup.InProgress, dedup.Completed:
			default:
				t.Errorf("round %d: outcome %v", round, c.Outcome)
			}
		}
		require.Equal(t, 1, acquired, "round %d: exactly one Begin acquires", round)
	}
}

// TestCrashKillBetweenBeginAndComplete kills, with SIGKILL, a child that
// has begun work on a key and not completed it. After reopen the key is in
// progress under the child's token until its lease ends, then another
// owner takes it over with a newer token, and the child's token is fenced
// off.
func TestCrashKillBetweenBeginAndComplete(t *testing.T) {
	dir := t.TempDir()
	cmd := testutil.ChildCommand(t, "record", dir)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n') // "begun <token> <lease end ns>"
	require.NoError(t, err, "the child said nothing")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	f := strings.Fields(line)
	require.Len(t, f, 3, "child said %q", line)
	token, err := strconv.ParseUint(f[1], 10, 64)
	require.NoError(t, err)
	leaseNS, err := strconv.ParseInt(f[2], 10, 64)
	require.NoError(t, err)
	leaseEnds := time.Unix(0, leaseNS)

	clock := ttl.NewFake(leaseEnds.Add(-time.Second))
	s := storetest.OpenAt(t, dir, &dedup.Options{Clock: clock})
	c, err := s.Begin([]byte("order-7"), []byte("fp"), time.Minute, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, dedup.InProgress, c.Outcome, "the dead child's lease is still live")
	assert.Equal(t, token, c.Token)

	clock.Set(leaseEnds)
	c, err = s.Begin([]byte("order-7"), []byte("fp"), time.Minute, time.Hour)
	require.NoError(t, err)
	require.Equal(t, dedup.Acquired, c.Outcome, "the key is reclaimable after the lease")
	assert.Greater(t, c.Token, token)
	assert.ErrorIs(t, s.Complete([]byte("order-7"), token, []byte("late")), dedup.ErrStaleToken)
	require.NoError(t, s.Complete([]byte("order-7"), c.Token, []byte("done")))
}

// recordChild is the child process of
// TestCrashKillBetweenBeginAndComplete: in the store directory args name
// it begins work on a key, says so, and waits to be killed.
func recordChild(t *testutil.Child, args []string) {
	s, err := dedup.Open(args[0], nil)
	require.NoError(t, err)
	c, err := s.Begin([]byte("order-7"), []byte("fp"), time.Minute, time.Hour)
	require.NoError(t, err)
	require.Equal(t, dedup.Acquired, c.Outcome)
	var out bytes.Buffer
	fmt.Fprintf(&out, "begun %d %d\n", c.Token, c.LeaseEnds.UnixNano())
	_, err = os.Stdout.Write(out.Bytes())
	require.NoError(t, err)
	select {} // until killed
}

// TestRecordsInExplainAndScan checks that operators see records: Explain
// and Scan carry the live mark's record, from the WAL tail and from
// Pebble.
func TestRecordsInExplainAndScan(t *testing.T) {
	s, _, _ := openRecords(t)
	c := begin(t, s, "rec-open", "fp-1", time.Minute)
	done := begin(t, s, "rec-done", "fp-2", time.Minute)
	require.NoError(t, s.Complete([]byte("rec-done"), done.Token, []byte("12345")))
	_, err := s.CheckAndMark([]byte("rec-plain"), 0)
	require.NoError(t, err)

	for _, where := range []string{"WAL tail", "Pebble"} {
		if where == "Pebble" {
			require.NoError(t, s.Checkpoint())
		}
		x, err := s.Explain([]byte("rec-open"))
		require.NoError(t, err)
		require.NotNil(t, x.Record, where)
		assert.Equal(t, dedup.StateInProgress, x.Record.State, where)
		assert.Equal(t, c.Token, x.Record.Token, where)
		assert.True(t, x.Record.LeaseEnds.Equal(c.LeaseEnds), where)

		got := map[string]*dedup.Record{}
		require.NoError(t, s.Scan([]byte("rec-"), false, func(m dedup.Mark) bool {
			got[string(m.ID)] = m.Record
			return true
		}))
		require.Len(t, got, 3, where)
		require.NotNil(t, got["rec-open"], where)
		assert.Equal(t, dedup.StateInProgress, got["rec-open"].State, where)
		require.NotNil(t, got["rec-done"], where)
		assert.Equal(t, "12345", string(got["rec-done"].Result), where)
		assert.Equal(t, "fp-2", string(got["rec-done"].Fingerprint), where)
		assert.Nil(t, got["rec-plain"], "%s: a plain mark has no record", where)
	}
}
