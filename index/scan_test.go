package index

import (
	"bytes"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/ttl"
)

// scanSteps scans ix at now in steps of at most keys keys, as the store
// does, and returns what each step yielded.
func scanSteps(t *testing.T, ix *Index, all bool, keys int) [][]Mark {
	t.Helper()
	var steps [][]Mark
	var after []byte
	sc := ix.NewScanner()
	for {
		var step []Mark
		last, err := sc.Scan(testNow, all, after, keys, func(m Mark) bool {
			step = append(step, m)
			return true
		})
		require.NoError(t, err)
		steps = append(steps, step)
		if last == nil {
			return steps
		}
		require.Positive(t, bytes.Compare(last, after), "a step moves on")
		after = last
	}
}

// TestScanInStepsYieldsAsOneScan checks that scanning in steps of a few
// keys yields the same versions, in the same order, as one scan, with
// versions in Pebble, a frozen memtable and the active one, in two
// generations, superseded and forgotten, and that no step yields more
// keys than it is given.
func TestScanInStepsYieldsAsOneScan(t *testing.T) {
	ix, _ := openIndex(t, testOptions(vfs.NewMem()))
	var lsn uint64
	apply := func(b *Batch) { lsn++; ix.Apply(b, lsn) }
	apply(markBatch(ix, generationMarks(6, time.Hour, time.Minute)...))
	checkpointIndex(t, ix)
	apply(markBatch(ix, generationMarks(3, 2*time.Hour)...))
	apply(forgetBatch("1h0m0s-1", "1m0s-2"))
	apply(markBatch(ix, mark{id: "1h0m0s-1", ttl: 10 * time.Second, value: "again"}))
	apply(forgetBatch("1h0m0s-4"))
	// Re-marked under the key of its version in Pebble.
	apply(markBatch(ix, mark{id: "1h0m0s-4", ttl: time.Hour}))
	// Stays frozen: its versions are in no table yet.
	ix.Freeze(testNow)
	apply(forgetBatch("1h0m0s-3", "2h0m0s-0", "unknown"))
	apply(markBatch(ix, mark{id: "1h0m0s-1", ttl: 2 * time.Hour}, mark{id: "new", ttl: time.Hour}))

	for _, all := range []bool{false, true} {
		one := scanSteps(t, ix, all, 1<<20)
		require.Len(t, one, 1, "all in one step")
		want := one[0]
		require.NotEmpty(t, want)
		for i := 1; i < len(want); i++ {
			a, b := want[i-1], want[i]
			assert.LessOrEqual(t, compareKey(a.Entry.Gen, a.ID, append(b.Entry.Gen.Append(nil), b.ID...)), 0, "%s before %s: in key order", a.ID, b.ID)
		}
		ids := map[string]int{}
		for _, m := range want {
			if m.Live {
				ids[string(m.ID)]++
			}
		}
		for id, n := range ids {
			assert.Equal(t, 1, n, "%s live once", id)
		}
		for _, keys := range []int{1, 2, 3, 7} {
			t.Run(fmt.Sprintf("all=%v keys=%d", all, keys), func(t *testing.T) {
				var got []Mark
				for _, step := range scanSteps(t, ix, all, keys) {
					distinct := map[string]bool{}
					for _, m := range step {
						distinct[string(m.ID)] = true
					}
					assert.LessOrEqual(t, len(distinct), keys, "IDs in one step")
					got = append(got, step...)
				}
				assert.Equal(t, want, got)
			})
		}
	}
}

// TestScanStepReadsTheMemtableEntriesOfItsKeys checks that a scan in many
// steps of a frozen and an active memtable, written to between steps,
// sorts each memtable entry in once and then reads at each step about the
// entries of its keys, about n log n + steps*keys entries in all, not the
// whole of every memtable at every step.
func TestScanStepReadsTheMemtableEntriesOfItsKeys(t *testing.T) {
	opts := testOptions(vfs.NewMem())
	opts.MemtableMarks = 1 << 20 // no checkpoint but the test's
	ix, _ := openIndex(t, opts)
	const marks, keys = 10000, 64
	var lsn uint64
	apply := func(b *Batch) { lsn++; ix.Apply(b, lsn) }
	apply(markBatch(ix, generationMarks(marks, time.Hour)...))
	ix.Freeze(testNow) // stays frozen: no table holds it
	apply(markBatch(ix, generationMarks(marks, time.Minute)...))

	sc := ix.NewScanner()
	var after []byte
	steps, yielded := 0, 0
	for {
		last, err := sc.Scan(testNow, false, after, keys, func(Mark) bool { yielded++; return true })
		require.NoError(t, err)
		steps++
		if last == nil {
			break
		}
		after = last
		// Written between steps, after the scan's position: one a step.
		apply(markBatch(ix, mark{id: fmt.Sprintf("between-%d", steps), ttl: 2 * time.Hour}))
	}
	n := 2*marks + steps
	assert.GreaterOrEqual(t, yielded, 2*marks, "every mark there for the whole scan")
	assert.Greater(t, steps, 2*marks/keys, "the scan took many steps")
	budget := n*bits.Len(uint(n)) + steps*keys
	assert.LessOrEqual(t, sc.examined, budget,
		"memtable entries read by %d steps over %d entries: about n log n + steps*keys, not steps*n = %d", steps, n, steps*n)
}

// TestScanInStepsWithWritesBetweenThemYieldsEachStayingVersionOnce checks,
// over random stores and writes, that a scan in steps with marks, forgets
// and checkpoints between the steps yields, in key order, each version
// there before and after it once, as a one-shot scan before and after
// does, no version twice, and no version that neither held and no write
// made.
func TestScanInStepsWithWritesBetweenThemYieldsEachStayingVersionOnce(t *testing.T) {
	for seed := range uint64(8) {
		for _, all := range []bool{false, true} {
			t.Run(fmt.Sprintf("seed=%d all=%v", seed, all), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 1))
				w := newRandomWriter(t, rng)
				var frozen *Frozen // a checkpoint under way
				// checkpoint starts a checkpoint or ends the one under
				// way, as the store's do while writes go on.
				checkpoint := func() {
					if frozen == nil {
						frozen = w.ix.Freeze(testNow)
						return
					}
					finishCheckpoint(t, w.ix, frozen)
					frozen = nil
				}
				for range 5 {
					w.write(200)
					if rng.IntN(2) == 0 {
						checkpoint()
					}
				}
				before := oneScan(t, w.ix, all)

				sc := w.ix.NewScanner()
				keys := 1 + rng.IntN(20)
				var got []Mark
				var after []byte
				for {
					last, err := sc.Scan(testNow, all, after, keys, func(m Mark) bool {
						got = append(got, m)
						return true
					})
					require.NoError(t, err)
					if last == nil {
						break
					}
					after = last
					w.write(rng.IntN(20))
					if rng.IntN(10) == 0 {
						checkpoint()
					}
				}
				afterAll := oneScan(t, w.ix, all)

				seen := map[version]int{}
				for i, m := range got {
					if i > 0 {
						prev := got[i-1]
						assert.LessOrEqual(t, compareKey(prev.Entry.Gen, prev.ID, versionKey(m)), 0, "%s before %s: in key order", prev.ID, m.ID)
					}
					v := versionOf(m)
					seen[v]++
					assert.Equal(t, 1, seen[v], "%+v at most once", v)
					assert.True(t, before[v] || afterAll[v] || w.written[v], "%+v was there or written", v)
				}
				staying := 0
				for v := range before {
					if afterAll[v] {
						staying++
						assert.Equal(t, 1, seen[v], "%+v, there before and after, once", v)
					}
				}
				assert.Positive(t, staying)
			})
		}
	}
}

// version names a version Scan yields: a mark by its ID, generation and
// deadline, which the random writer makes unique, and whether it is live;
// a forget, which is only ever in a memtable, by its ID and LSN.
type version struct {
	id        string
	gen       ttl.Gen
	deadline  ttl.Deadline
	live      bool
	forgotLSN uint64
}

func versionOf(m Mark) version {
	v := version{id: string(m.ID), gen: m.Entry.Gen, deadline: m.Entry.Deadline, live: m.Live}
	if m.Entry.Deadline == 0 {
		v.forgotLSN = m.Entry.LSN
	}
	return v
}

// versionKey returns the key m is ordered by: zero for a forget.
func versionKey(m Mark) []byte { return append(m.Entry.Gen.Append(nil), m.ID...) }

// oneScan returns the versions of one scan of ix in a single step.
func oneScan(t *testing.T, ix *Index, all bool) map[version]bool {
	t.Helper()
	steps := scanSteps(t, ix, all, 1<<20)
	require.Len(t, steps, 1)
	vs := map[version]bool{}
	for _, m := range steps[0] {
		vs[versionOf(m)] = true
	}
	return vs
}

// randomWriter writes random marks and forgets of a few hundred IDs to
// an index, each mark with a deadline of its own, marking only IDs with
// no live mark, as the store does.
type randomWriter struct {
	t       *testing.T
	ix      *Index
	rng     *rand.Rand
	lsn     uint64
	live    map[string]bool
	written map[version]bool // the marks and forgets made, live or not
	ttls    int              // the TTLs handed out: each mark gets the next
}

func newRandomWriter(t *testing.T, rng *rand.Rand) *randomWriter {
	ix, _ := openIndex(t, testOptions(vfs.NewMem()))
	return &randomWriter{t: t, ix: ix, rng: rng, live: map[string]bool{}, written: map[version]bool{}}
}

// write makes n writes, a batch each.
func (w *randomWriter) write(n int) {
	for range n {
		id := fmt.Sprintf("id-%03d", w.rng.IntN(300))
		w.lsn++
		if w.live[id] || w.rng.IntN(4) == 0 {
			w.ix.Apply(forgetBatch(id), w.lsn)
			w.live[id] = false
			w.written[version{id: id, forgotLSN: w.lsn}] = true
			continue
		}
		w.ttls++
		m := mark{id: id, ttl: time.Duration(w.ttls)*time.Millisecond + []time.Duration{time.Second, time.Minute, time.Hour}[w.rng.IntN(3)]}
		w.ix.Apply(markBatch(w.ix, m), w.lsn)
		w.live[id] = true
		e := entryOf(m, 0)
		for _, live := range []bool{false, true} {
			w.written[version{id: id, gen: e.Gen, deadline: e.Deadline, live: live}] = true
		}
	}
}

// BenchmarkScanStep measures a step of 4096 keys over a memtable of 2^18
// marks: the first of a Scanner, which sorts the memtable in, and the
// next ones, which walk from where the last ended.
func BenchmarkScanStep(b *testing.B) {
	opts := testOptions(vfs.NewMem())
	opts.MemtableMarks = 1 << 20
	ix, err := Open(testDir, opts)
	require.NoError(b, err)
	defer ix.Close()
	const marks, keys = 1 << 18, 4096
	ms := make([]mark, marks)
	for i := range ms {
		ms[i] = mark{id: fmt.Sprintf("%08x", rand.Uint32()), ttl: time.Hour}
	}
	ix.Apply(markBatch(ix, ms...), 1)
	count := func(Mark) bool { return true }
	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			_, err := ix.NewScanner().Scan(testNow, false, nil, keys, count)
			require.NoError(b, err)
		}
	})
	b.Run("next", func(b *testing.B) {
		sc := ix.NewScanner()
		var after []byte
		for b.Loop() {
			last, err := sc.Scan(testNow, false, after, keys, count)
			require.NoError(b, err)
			after = last
		}
	})
}

// TestScanWhilePersistedBeforeEndCheckpointYieldsEachVersionOnce checks
// that a scan step that runs after Persist has ingested a frozen memtable
// but before EndCheckpoint takes it out of the read path (the store runs
// Persist without its lock, so a Scan step can fall there) yields each
// version once: it is then both in Pebble and in the frozen memtable.
func TestScanWhilePersistedBeforeEndCheckpointYieldsEachVersionOnce(t *testing.T) {
	ix, _ := openIndex(t, testOptions(vfs.NewMem()))
	ix.Apply(markBatch(ix, generationMarks(3, time.Hour)...), 1)
	f := ix.Freeze(testNow)
	require.NoError(t, ix.Persist(f))
	for _, all := range []bool{false, true} {
		steps := scanSteps(t, ix, all, 1<<20)
		require.Len(t, steps, 1)
		seen := map[version]int{}
		for _, m := range steps[0] {
			v := versionOf(m)
			v.live = false
			seen[v]++
		}
		assert.Len(t, seen, 3, "all=%v", all)
		for v, n := range seen {
			assert.Equal(t, 1, n, "all=%v: %+v once, got %v", all, v, steps[0])
		}
	}
	ix.EndCheckpoint(f)
}
