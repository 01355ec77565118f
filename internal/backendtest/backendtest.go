// Package backendtest is the contract every dedup.Backend keeps, as a test
// suite: the embedded Store and the Redis store run the same subtests, so
// that code written against dedup.Backend means the same on either.
//
// The subtests use real time, with TTLs and leases of a few hundred
// milliseconds checked with generous slack, and read no backend's clock:
// a backend may keep time on a server, as long as that server's clock is
// the test machine's.
package backendtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
)

// MaxIDSize is the longest ID the backends under test must accept; a
// longer one must fail with dedup.ErrIDTooLong. It is the Store's default
// Options.MaxIDSize.
const MaxIDSize = 4096

// Run runs the contract's subtests. Each opens its own backend with open,
// which returns a new, empty backend with IDs of up to MaxIDSize bytes,
// and closes it when t ends; a subtest may close it first, so closing it
// twice must be harmless.
func Run(t *testing.T, open func(t *testing.T) dedup.Backend) {
	tests := []struct {
		name string
		test func(*testing.T, dedup.Backend)
	}{
		{"Outcomes", testOutcomes},
		{"BadInputChangesNothing", testBadInput},
		{"ExactExpiry", testExactExpiry},
		{"Leases", testLeases},
		{"StaleTokensAfterTakeover", testStaleTokens},
		{"FingerprintsMatchOnlyIfEqual", testFingerprints},
		{"Batch", testBatch},
		{"EndedContextHasNoEffect", testEndedContext},
		{"Closed", testClosed},
		{"Linearizable", Linearizable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, open(t)) })
	}
}

// Slack is how much later than its deadline a check of expiry runs, and
// leeway how far a reported time may be from the one the test computed.
const (
	slack  = 50 * time.Millisecond
	leeway = 10 * time.Millisecond
)

func testOutcomes(t *testing.T, b dedup.Backend) {
	ctx := t.Context()
	id := []byte("order-1")
	assertNew(t, b, id, true, "a fresh ID")
	assertNew(t, b, id, false, "a marked ID")
	assertSeen(t, b, id, true, "a marked ID")
	assertSeen(t, b, []byte("order-2"), false, "an ID never marked")

	require.NoError(t, b.ForgetContext(ctx, id))
	assertSeen(t, b, id, false, "a forgotten ID")
	assertNew(t, b, id, true, "a forgotten ID")
	require.NoError(t, b.ForgetContext(ctx, []byte("order-3")), "forgetting an ID never marked")
	assertSeen(t, b, []byte("order-3"), false, "an ID forgotten without a mark")

	_, ok, err := b.RecordContext(ctx, id)
	require.NoError(t, err)
	assert.False(t, ok, "a key marked by CheckAndMark has no record")
	c, err := b.BeginContext(ctx, id, []byte("fingerprint"), time.Minute, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, dedup.Completed, c.Outcome, "a key marked by CheckAndMark is completed work")
	assert.Empty(t, c.Result)

	long := bytes.Repeat([]byte("x"), MaxIDSize)
	assertNew(t, b, long, true, "an ID of MaxIDSize bytes")
	assertNew(t, b, long, false, "an ID of MaxIDSize bytes")
}

func testBadInput(t *testing.T, b dedup.Backend) {
	ctx := t.Context()
	fresh, marked, held := []byte("fresh"), []byte("marked"), []byte("held")
	long := bytes.Repeat([]byte("x"), MaxIDSize+1)
	tooLarge := make([]byte, b.MaxValueSize()+1)
	assertNew(t, b, marked, true, "set-up")
	claim, err := b.BeginContext(ctx, held, []byte("fp"), time.Minute, time.Hour)
	require.NoError(t, err)
	require.Equal(t, dedup.Acquired, claim.Outcome)
	// A result that fits alone but not with the record's fingerprint.
	tooLargeWithFingerprint := make([]byte, b.MaxValueSize()-1)

	begin := func(key, fp []byte, lease, ttl time.Duration) error {
		_, err := b.BeginContext(ctx, key, fp, lease, ttl)
		return err
	}
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"CheckAndMark, empty ID", func() error { _, err := b.CheckAndMarkContext(ctx, nil, time.Hour); return err }, dedup.ErrEmptyID},
		{"CheckAndMark, long ID", func() error { _, err := b.CheckAndMarkContext(ctx, long, time.Hour); return err }, dedup.ErrIDTooLong},
		{"CheckAndMark, negative TTL", func() error { _, err := b.CheckAndMarkContext(ctx, fresh, -time.Second); return err }, dedup.ErrInvalidTTL},
		{"CheckAndMarkBatch, one empty ID", func() error {
			_, err := b.CheckAndMarkBatchContext(ctx, [][]byte{fresh, {}}, time.Hour)
			return err
		}, dedup.ErrEmptyID},
		{"CheckAndMarkBatch, one long ID", func() error {
			_, err := b.CheckAndMarkBatchContext(ctx, [][]byte{fresh, long}, time.Hour)
			return err
		}, dedup.ErrIDTooLong},
		{"CheckAndMarkBatch, negative TTL", func() error {
			_, err := b.CheckAndMarkBatchContext(ctx, [][]byte{fresh}, -time.Second)
			return err
		}, dedup.ErrInvalidTTL},
		{"Seen, empty ID", func() error { _, err := b.SeenContext(ctx, nil); return err }, dedup.ErrEmptyID},
		{"Seen, long ID", func() error { _, err := b.SeenContext(ctx, long); return err }, dedup.ErrIDTooLong},
		{"Forget, empty ID", func() error { return b.ForgetContext(ctx, nil) }, dedup.ErrEmptyID},
		{"Forget, long ID", func() error { return b.ForgetContext(ctx, long) }, dedup.ErrIDTooLong},
		{"Begin, empty key", func() error { return begin(nil, nil, time.Minute, time.Hour) }, dedup.ErrEmptyID},
		{"Begin, long key", func() error { return begin(long, nil, time.Minute, time.Hour) }, dedup.ErrIDTooLong},
		{"Begin, negative TTL", func() error { return begin(fresh, nil, time.Minute, -time.Hour) }, dedup.ErrInvalidTTL},
		{"Begin, zero lease", func() error { return begin(fresh, nil, 0, time.Hour) }, dedup.ErrInvalidTTL},
		{"Begin, negative lease", func() error { return begin(fresh, nil, -time.Minute, time.Hour) }, dedup.ErrInvalidTTL},
		{"Begin, lease longer than the TTL", func() error { return begin(fresh, nil, 2*time.Hour, time.Hour) }, dedup.ErrInvalidTTL},
		{"Begin, fingerprint too large", func() error { return begin(fresh, tooLarge, time.Minute, time.Hour) }, dedup.ErrValueTooLarge},
		{"Complete, empty key", func() error { return b.CompleteContext(ctx, nil, claim.Token, nil) }, dedup.ErrEmptyID},
		{"Complete, long key", func() error { return b.CompleteContext(ctx, long, claim.Token, nil) }, dedup.ErrIDTooLong},
		{"Complete, result too large", func() error { return b.CompleteContext(ctx, held, claim.Token, tooLarge) }, dedup.ErrValueTooLarge},
		{"Complete, result too large with the fingerprint", func() error {
			return b.CompleteContext(ctx, held, claim.Token, tooLargeWithFingerprint)
		}, dedup.ErrValueTooLarge},
		{"Complete, another token", func() error { return b.CompleteContext(ctx, held, claim.Token+1, nil) }, dedup.ErrStaleToken},
		{"Complete, a key without a record", func() error { return b.CompleteContext(ctx, fresh, claim.Token, nil) }, dedup.ErrStaleToken},
		{"Complete, a plain mark", func() error { return b.CompleteContext(ctx, marked, claim.Token, nil) }, dedup.ErrStaleToken},
		{"Release, empty key", func() error { return b.ReleaseContext(ctx, nil, claim.Token) }, dedup.ErrEmptyID},
		{"Release, long key", func() error { return b.ReleaseContext(ctx, long, claim.Token) }, dedup.ErrIDTooLong},
		{"Release, another token", func() error { return b.ReleaseContext(ctx, held, claim.Token+1) }, dedup.ErrStaleToken},
		{"Release, a key without a record", func() error { return b.ReleaseContext(ctx, fresh, claim.Token) }, dedup.ErrStaleToken},
		{"Record, empty key", func() error { _, _, err := b.RecordContext(ctx, nil); return err }, dedup.ErrEmptyID},
		{"Record, long key", func() error { _, _, err := b.RecordContext(ctx, long); return err }, dedup.ErrIDTooLong},
	}
	for _, tc := range tests {
		assert.ErrorIs(t, tc.call(), tc.want, tc.name)
	}

	assertSeen(t, b, fresh, false, "an ID only given with bad input")
	assertSeen(t, b, marked, true, "an ID marked before the bad input")
	r, ok, err := b.RecordContext(ctx, held)
	require.NoError(t, err)
	require.True(t, ok, "the held key keeps its record")
	assert.Equal(t, dedup.StateInProgress, r.State, "the held key is still in progress")
	assert.Equal(t, claim.Token, r.Token, "the held key keeps its token")
	assert.Empty(t, r.Result)
}

func testExactExpiry(t *testing.T, b dedup.Backend) {
	ctx := t.Context()
	const (
		ttl    = 300 * time.Millisecond
		before = 100 * time.Millisecond // how long before the deadline the live check runs
		tries  = 5
	)
	for try := range tries {
		id := fmt.Appendf(nil, "expiring-%d", try)
		start := time.Now()
		isNew, err := b.CheckAndMarkContext(ctx, id, ttl)
		marked := time.Now()
		require.NoError(t, err)
		require.True(t, isNew, "a fresh ID")
		// The deadline is ttl after the mark was written, between start
		// and marked.
		time.Sleep(time.Until(start.Add(ttl - before)))
		live, err := b.SeenContext(ctx, id)
		require.NoError(t, err)
		if asked := time.Now(); !asked.Before(start.Add(ttl)) {
			t.Logf("try %d: the mark took %v and Seen returned %v after it; too late to tell", try, marked.Sub(start), asked.Sub(marked))
			continue
		}
		assert.True(t, live, "a mark of TTL %v is live %v after it was written", ttl, ttl-before)
		time.Sleep(time.Until(marked.Add(ttl + slack)))
		assertSeen(t, b, id, false, fmt.Sprintf("a mark of TTL %v, %v after it was written", ttl, ttl+slack))
		assertNew(t, b, id, true, "an expired ID")
		return
	}
	t.Fatalf("in %d tries no mark of TTL %v could be read back within %v of its deadline: the backend is too slow for this test", tries, ttl, before)
}

func testLeases(t *testing.T, b dedup.Backend) {
	ctx := t.Context()
	key, fp, other := []byte("payment-1"), []byte("fp-1"), []byte("fp-2")
	const lease = 300 * time.Millisecond

	start := time.Now()
	first, err := b.BeginContext(ctx, key, fp, lease, time.Hour)
	require.NoError(t, err)
	acquired := time.Now()
	require.Equal(t, dedup.Acquired, first.Outcome, "a free key")
	assert.Equal(t, dedup.StateInProgress, first.State)
	assert.Equal(t, fp, first.Fingerprint)
	assert.WithinRange(t, first.LeaseEnds, start.Add(lease-leeway), acquired.Add(lease+leeway), "the lease ends lease after Begin")
	assert.WithinRange(t, first.Deadline, start.Add(time.Hour-leeway), acquired.Add(time.Hour+leeway), "the record is kept for its TTL")

	c, err := b.BeginContext(ctx, key, other, lease, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, dedup.Mismatch, c.Outcome, "another fingerprint, while in progress")

	time.Sleep(time.Until(acquired.Add(lease + slack)))
	second, err := b.BeginContext(ctx, key, fp, time.Minute, time.Hour)
	require.NoError(t, err)
	require.Equal(t, dedup.Acquired, second.Outcome, "a key whose lease has ended is taken over")
	assert.Greater(t, second.Token, first.Token, "a takeover's token is larger")

	c, err = b.BeginContext(ctx, key, fp, time.Minute, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, dedup.InProgress, c.Outcome, "a key whose lease is live")
	assert.Equal(t, second.Token, c.Token, "InProgress names the owner's token")

	result := []byte("201 Created")
	require.NoError(t, b.CompleteContext(ctx, key, second.Token, result))
	require.NoError(t, b.CompleteContext(ctx, key, second.Token, result), "completing again with the same token")
	c, err = b.BeginContext(ctx, key, fp, time.Minute, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, dedup.Completed, c.Outcome, "a completed key")
	assert.Equal(t, result, c.Result, "Completed returns the result")
	c, err = b.BeginContext(ctx, key, other, time.Minute, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, dedup.Mismatch, c.Outcome, "another fingerprint, once completed")
	assert.Empty(t, c.Result, "a Mismatch does not return the result")
	r, ok, err := b.RecordContext(ctx, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dedup.StateCompleted, r.State)
	assert.Equal(t, second.Token, r.Token)
	assert.Equal(t, result, r.Result)
	assertSeen(t, b, key, true, "a completed key")
	assert.ErrorIs(t, b.ReleaseContext(ctx, key, second.Token), dedup.ErrStaleToken, "a completed key cannot be released")

	free := []byte("payment-2")
	got, err := b.BeginContext(ctx, free, nil, time.Minute, time.Hour)
	require.NoError(t, err)
	require.Equal(t, dedup.Acquired, got.Outcome)
	require.NoError(t, b.ReleaseContext(ctx, free, got.Token))
	assertSeen(t, b, free, false, "a released key")
	_, ok, err = b.RecordContext(ctx, free)
	require.NoError(t, err)
	assert.False(t, ok, "a released key has no record")
	again, err := b.BeginContext(ctx, free, nil, time.Minute, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, dedup.Acquired, again.Outcome, "a released key is free")
	assert.Greater(t, again.Token, got.Token, "tokens for a key only grow")
}

func testStaleTokens(t *testing.T, b dedup.Backend) {
	ctx := t.Context()
	key := []byte("job-1")
	const lease = 200 * time.Millisecond
	old, err := b.BeginContext(ctx, key, nil, lease, time.Hour)
	require.NoError(t, err)
	acquired := time.Now()
	require.Equal(t, dedup.Acquired, old.Outcome)
	time.Sleep(time.Until(acquired.Add(lease + slack)))
	assert.NoError(t, b.CompleteContext(ctx, key, old.Token, []byte("late")), "Complete after the lease ended, before any takeover")
	require.NoError(t, b.ForgetContext(ctx, key))

	old, err = b.BeginContext(ctx, key, nil, lease, time.Hour)
	require.NoError(t, err)
	acquired = time.Now()
	require.Equal(t, dedup.Acquired, old.Outcome)
	time.Sleep(time.Until(acquired.Add(lease + slack)))
	owner, err := b.BeginContext(ctx, key, nil, time.Minute, time.Hour)
	require.NoError(t, err)
	require.Equal(t, dedup.Acquired, owner.Outcome, "the takeover")

	assert.ErrorIs(t, b.CompleteContext(ctx, key, old.Token, []byte("stale")), dedup.ErrStaleToken, "Complete with the token taken over")
	assert.ErrorIs(t, b.ReleaseContext(ctx, key, old.Token), dedup.ErrStaleToken, "Release with the token taken over")
	r, ok, err := b.RecordContext(ctx, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dedup.StateInProgress, r.State, "a stale token changes nothing")
	assert.Equal(t, owner.Token, r.Token, "a stale token changes nothing")
	require.NoError(t, b.CompleteContext(ctx, key, owner.Token, []byte("done")), "the new owner completes")
}

func testBatch(t *testing.T, b dedup.Backend) {
	ctx := t.Context()
	ids := func(names ...string) [][]byte {
		out := make([][]byte, len(names))
		for i, n := range names {
			out[i] = []byte(n)
		}
		return out
	}
	isNew, err := b.CheckAndMarkBatchContext(ctx, ids("a", "b", "a", "c", "b", "a"), time.Hour)
	require.NoError(t, err)
	assert.Equal(t, []bool{true, true, false, true, false, false}, isNew, "a repeated ID is new only at its first occurrence")

	assertNew(t, b, []byte("e"), true, "set-up")
	isNew, err = b.CheckAndMarkBatchContext(ctx, ids("d", "e", "f", "a", "g"), time.Hour)
	require.NoError(t, err)
	assert.Equal(t, []bool{true, false, true, false, true}, isNew, "the answers follow the order of the IDs")
	for _, id := range ids("d", "f", "g") {
		assertSeen(t, b, id, true, "marked by a batch")
	}

	isNew, err = b.CheckAndMarkBatchContext(ctx, nil, time.Hour)
	require.NoError(t, err, "an empty batch")
	assert.Empty(t, isNew, "an empty batch")
}

func testEndedContext(t *testing.T, b dedup.Backend) {
	live := t.Context()
	marked, fresh, held := []byte("marked"), []byte("fresh"), []byte("held")
	assertNew(t, b, marked, true, "set-up")
	claim, err := b.BeginContext(live, held, nil, time.Minute, time.Hour)
	require.NoError(t, err)
	require.Equal(t, dedup.Acquired, claim.Outcome)

	cancelled, cancel := context.WithCancel(live)
	cancel()
	expired, stop := context.WithDeadline(live, time.Now().Add(-time.Second))
	defer stop()
	for _, ctx := range []context.Context{cancelled, expired} {
		want := ctx.Err()
		_, err := b.CheckAndMarkContext(ctx, fresh, time.Hour)
		assert.ErrorIs(t, err, want, "CheckAndMark")
		_, err = b.CheckAndMarkBatchContext(ctx, [][]byte{fresh, marked}, time.Hour)
		assert.ErrorIs(t, err, want, "CheckAndMarkBatch")
		_, err = b.SeenContext(ctx, marked)
		assert.ErrorIs(t, err, want, "Seen")
		assert.ErrorIs(t, b.ForgetContext(ctx, marked), want, "Forget")
		_, err = b.BeginContext(ctx, fresh, nil, time.Minute, time.Hour)
		assert.ErrorIs(t, err, want, "Begin")
		assert.ErrorIs(t, b.CompleteContext(ctx, held, claim.Token, []byte("result")), want, "Complete")
		assert.ErrorIs(t, b.ReleaseContext(ctx, held, claim.Token), want, "Release")
		_, _, err = b.RecordContext(ctx, held)
		assert.ErrorIs(t, err, want, "Record")
	}

	assertSeen(t, b, fresh, false, "an ID only marked with an ended context")
	assertSeen(t, b, marked, true, "an ID only forgotten with an ended context")
	r, ok, err := b.RecordContext(live, held)
	require.NoError(t, err)
	require.True(t, ok, "a key only released with an ended context keeps its record")
	assert.Equal(t, dedup.StateInProgress, r.State, "a key only completed with an ended context")
	assert.Equal(t, claim.Token, r.Token)
}

func testClosed(t *testing.T, b dedup.Backend) {
	ctx := t.Context()
	id := []byte("id")
	claim, err := b.BeginContext(ctx, id, nil, time.Minute, time.Hour)
	require.NoError(t, err)
	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "closing twice")

	_, err = b.CheckAndMarkContext(ctx, []byte("other"), time.Hour)
	assert.ErrorIs(t, err, dedup.ErrClosed, "CheckAndMark")
	_, err = b.CheckAndMarkBatchContext(ctx, [][]byte{[]byte("other")}, time.Hour)
	assert.ErrorIs(t, err, dedup.ErrClosed, "CheckAndMarkBatch")
	_, err = b.SeenContext(ctx, id)
	assert.ErrorIs(t, err, dedup.ErrClosed, "Seen")
	assert.ErrorIs(t, b.ForgetContext(ctx, id), dedup.ErrClosed, "Forget")
	_, err = b.BeginContext(ctx, []byte("other"), nil, time.Minute, time.Hour)
	assert.ErrorIs(t, err, dedup.ErrClosed, "Begin")
	assert.ErrorIs(t, b.CompleteContext(ctx, id, claim.Token, nil), dedup.ErrClosed, "Complete")
	assert.ErrorIs(t, b.ReleaseContext(ctx, id, claim.Token), dedup.ErrClosed, "Release")
	_, _, err = b.RecordContext(ctx, id)
	assert.ErrorIs(t, err, dedup.ErrClosed, "Record")
}

func assertNew(t *testing.T, b dedup.Backend, id []byte, want bool, what string) {
	t.Helper()
	isNew, err := b.CheckAndMarkContext(t.Context(), id, time.Hour)
	require.NoError(t, err, "CheckAndMark, %s", what)
	assert.Equal(t, want, isNew, "CheckAndMark, %s: is it new?", what)
}

func assertSeen(t *testing.T, b dedup.Backend, id []byte, want bool, what string) {
	t.Helper()
	seen, err := b.SeenContext(t.Context(), id)
	require.NoError(t, err, "Seen, %s", what)
	assert.Equal(t, want, seen, "Seen, %s", what)
}

// setOp is one call in a linearizability history.
type setOp int

const (
	opCheckAndMark setOp = iota
	opSeen
	opForget
)

func (o setOp) String() string {
	switch o {
	case opCheckAndMark:
		return "CheckAndMark"
	case opSeen:
		return "Seen"
	case opForget:
		return "Forget"
	}
	return fmt.Sprintf("setOp(%d)", int(o))
}

// setInput is the input of a history operation: a call on one ID.
type setInput struct {
	op setOp
	id int
}

const linearizabilityIDs = 8

// setModel specifies a backend as a set of live IDs. IDs are independent,
// so the history is partitioned by ID and each partition's state is just
// whether its ID is marked. Outputs are the bool results of CheckAndMark
// and Seen; Forget has none.
var setModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byID := make([][]porcupine.Operation, linearizabilityIDs)
		for _, op := range history {
			id := op.Input.(setInput).id
			byID[id] = append(byID[id], op)
		}
		return byID
	},
	Init: func() any { return false },
	Step: func(state, input, output any) (bool, any) {
		marked := state.(bool)
		switch op := input.(setInput).op; op {
		case opCheckAndMark:
			return output.(bool) == !marked, true
		case opSeen:
			return output.(bool) == marked, marked
		case opForget:
			return true, false
		default:
			panic(fmt.Sprintf("unknown %v", op))
		}
	},
	DescribeOperation: func(input, output any) string {
		in := input.(setInput)
		if in.op == opForget {
			return fmt.Sprintf("Forget(%d)", in.id)
		}
		return fmt.Sprintf("%v(%d) -> %v", in.op, in.id, output)
	},
}

// apply performs in on b and returns its output for the model.
func apply(ctx context.Context, b dedup.Backend, in setInput) (any, error) {
	id := fmt.Appendf(nil, "id-%d", in.id)
	switch in.op {
	case opCheckAndMark:
		return b.CheckAndMarkContext(ctx, id, time.Hour)
	case opSeen:
		return b.SeenContext(ctx, id)
	case opForget:
		return nil, b.ForgetContext(ctx, id)
	}
	return nil, fmt.Errorf("unknown %v", in.op)
}

// Linearizable records a concurrent history of CheckAndMark, Seen and
// Forget calls on a few IDs of b, which must hold none of them yet, and
// checks it against a sequential set of IDs. Run runs it; a backend's own
// tests run it again where its concurrency is at its hardest (a store
// that checkpoints all the time, a Cluster).
func Linearizable(t *testing.T, b dedup.Backend) {
	const (
		clients      = 8
		opsPerClient = 100
	)
	// Weighted so that IDs are often forgotten and so often new again.
	mix := []setOp{opCheckAndMark, opCheckAndMark, opCheckAndMark, opSeen, opSeen, opForget}
	ctx := t.Context()

	// A shared counter orders calls and returns exactly as they happened.
	var ticks atomic.Int64
	histories := make([][]porcupine.Operation, clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			<-start
			for range opsPerClient {
				in := setInput{op: mix[rand.IntN(len(mix))], id: rand.IntN(linearizabilityIDs)}
				callTime := ticks.Add(1)
				out, err := apply(ctx, b, in)
				returnTime := ticks.Add(1)
				if !assert.NoError(t, err, "%v(%d)", in.op, in.id) {
					return
				}
				histories[c] = append(histories[c], porcupine.Operation{
					ClientId: c, Input: in, Call: callTime, Output: out, Return: returnTime,
				})
			}
		})
	}
	close(start)
	wg.Wait()

	var history []porcupine.Operation
	for _, h := range histories {
		history = append(history, h...)
	}
	require.Len(t, history, clients*opsPerClient, "every call must succeed")

	result, info := porcupine.CheckOperationsVerbose(setModel, history, 0)
	if !assert.Equal(t, porcupine.Ok, result, "history of %d operations is not linearizable", len(history)) {
		f, err := os.CreateTemp("", "dedup-linearizability-*.html")
		require.NoError(t, err)
		defer f.Close()
		require.NoError(t, porcupine.Visualize(setModel, info, f))
		t.Logf("visualization of the history: %s", f.Name())
	}
}

// testFingerprints checks that a fingerprint matches only an equal one, an
// empty one like any other: a key begun with none is a Mismatch for a
// request with one, and the other way round, in progress or completed;
// while a key marked by CheckAndMark, which has no record, is completed
// work for any fingerprint.
func testFingerprints(t *testing.T, b dedup.Backend) {
	ctx := t.Context()
	tests := []struct {
		name      string
		first     string // the fingerprint the key was begun with; "mark" for CheckAndMark
		completed bool
		then      []byte
		want      dedup.Outcome
	}{
		{"none, then one, in progress", "", false, []byte("fp"), dedup.Mismatch},
		{"none, then one, completed", "", true, []byte("fp"), dedup.Mismatch},
		{"one, then none, in progress", "fp", false, nil, dedup.Mismatch},
		{"one, then none, completed", "fp", true, nil, dedup.Mismatch},
		{"none, then empty", "", true, []byte{}, dedup.Completed},
		{"none, then none, in progress", "", false, nil, dedup.InProgress},
		{"the same", "fp", true, []byte("fp"), dedup.Completed},
		{"a plain mark, then one", "mark", true, []byte("fp"), dedup.Completed},
		{"a plain mark, then none", "mark", true, nil, dedup.Completed},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Appendf(nil, "fingerprint-%d", i)
			if tt.first == "mark" {
				_, err := b.CheckAndMarkContext(ctx, key, time.Hour)
				require.NoError(t, err)
				_, ok, err := b.RecordContext(ctx, key)
				require.NoError(t, err)
				assert.False(t, ok, "a plain mark has no record")
			} else {
				c, err := b.BeginContext(ctx, key, []byte(tt.first), time.Minute, time.Hour)
				require.NoError(t, err)
				require.Equal(t, dedup.Acquired, c.Outcome)
				if tt.completed {
					require.NoError(t, b.CompleteContext(ctx, key, c.Token, []byte("result")))
				}
			}
			c, err := b.BeginContext(ctx, key, tt.then, time.Minute, time.Hour)
			require.NoError(t, err)
			assert.Equal(t, tt.want, c.Outcome)
			if tt.want == dedup.Mismatch {
				assert.Nil(t, c.Result, "a mismatch does not see the result")
			}
		})
	}
}
