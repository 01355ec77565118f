package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/fsutil"
	"github.com/seed42300104/dedup/internal/testutil"
)

// logDir is the directory openLog keeps its log in.
const logDir = "wal"

// segFiles is a copy of a log directory: segment file name to contents.
// Tests damage the copy and mount it on a fresh filesystem.
type segFiles map[string][]byte

// buildLog writes n records with payloads of varying sizes to a fresh log
// in mode, closes it and returns a copy of its files and the records.
func buildLog(t *testing.T, mode SyncMode, n int) (segFiles, []entry) {
	t.Helper()
	fs := vfs.NewMem()
	l, _ := openLog(t, fs, Options{Sync: mode}, 0)
	var want []entry
	for i := range n {
		p := testPayload(i)
		lsn, err := l.Append(p)
		require.NoError(t, err)
		require.NoError(t, l.Wait(lsn))
		want = append(want, entry{lsn, string(p)})
	}
	require.NoError(t, l.Close())

	names, err := fs.List(logDir)
	require.NoError(t, err)
	files := segFiles{}
	for _, name := range names {
		if name == spareName {
			continue // not a segment: the cases damage segments
		}
		files[name], err = fsutil.ReadFile(fs, fs.PathJoin(logDir, name))
		require.NoError(t, err)
	}
	return files, want
}

// testPayload is the payload of the i-th record of buildLog: 150 to 349
// bytes, so that records need every amount of padding.
func testPayload(i int) []byte {
	return bytes.Repeat([]byte{'a' + byte(i%26)}, 150+(i*37)%200)
}

// names returns the segment file names, oldest first.
func (f segFiles) names() []string {
	var names []string
	for name := range maps.Keys(f) {
		if strings.HasSuffix(name, ".wal") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func (f segFiles) clone() segFiles {
	c := make(segFiles, len(f))
	for name, b := range f {
		c[name] = bytes.Clone(b)
	}
	return c
}

// mount writes the files to logDir on a fresh in-memory filesystem.
func (f segFiles) mount(t *testing.T) vfs.FS {
	t.Helper()
	fs := vfs.NewMem()
	require.NoError(t, fs.MkdirAll(logDir, 0o755))
	for name, b := range f {
		file, err := fs.Create(fs.PathJoin(logDir, name), vfs.WriteCategoryUnspecified)
		require.NoError(t, err)
		_, err = file.Write(b)
		require.NoError(t, err)
		require.NoError(t, file.Close())
	}
	return fs
}

// tryOpen opens the log in logDir on fs and returns what it replayed, or
// the error Open failed with.
func tryOpen(fs vfs.FS, opts Options, after uint64) (*Log, []entry, error) {
	opts.FS = fs
	if opts.SegmentSize == 0 {
		opts.SegmentSize = 4096
	}
	var got []entry
	l, err := Open(logDir, opts, after, func(lsn uint64, p []byte) error {
		got = append(got, entry{lsn, string(p)})
		return nil
	})
	return l, got, err
}

// recPos locates one record in a segment.
type recPos struct {
	off     int // where it starts
	dataEnd int // where its payload ends
	end     int // where its padding ends
	lsn     uint64
	synced  uint64 // its synced-to field
	payload []byte
}

// recordsOf returns the records of segment b that decode in sequence.
func recordsOf(b []byte) []recPos {
	var recs []recPos
	for off := headerSize; ; {
		r, ok := decodeRecord(b[off:])
		if !ok {
			return recs
		}
		recs = append(recs, recPos{off, off + recHeaderSize + len(r.payload), off + r.size, r.lsn, r.syncedTo, r.payload})
		off += r.size
	}
}

// assertAligned checks that every record of every segment starts on an
// 8-byte boundary, as the format requires.
func assertAligned(t *testing.T, fs vfs.FS) {
	t.Helper()
	names, err := fs.List(logDir)
	require.NoError(t, err)
	for _, name := range names {
		if !strings.HasSuffix(name, ".wal") {
			continue // the spare, which Close may leave half prepared
		}
		b, err := fsutil.ReadFile(fs, fs.PathJoin(logDir, name))
		require.NoError(t, err)
		for _, r := range recordsOf(b) {
			assert.Zero(t, r.off%align, "%s: record LSN %d starts at offset %d", name, r.lsn, r.off)
		}
	}
}

// TestTornTailIsTruncated tears the newest segment at every byte of its
// last three records. Each tear is a torn write: Open must keep exactly the
// records before it, and the repaired log must take and keep new records
// with LSNs that follow on.
func TestTornTailIsTruncated(t *testing.T) {
	variants := []struct {
		name string
		mode SyncMode
		// damage tears the segment b at cut, inside the record that ends
		// at recEnd.
		damage func(b []byte, cut, recEnd int) []byte
		// laterKept says the records after the torn one stay on disk.
		laterKept bool
	}{
		{
			name:   "rest zeroed",
			mode:   SyncAlways,
			damage: func(b []byte, cut, _ int) []byte { clear(b[cut:]); return b },
		},
		{
			// Under SyncNone nothing in the newest segment is vouched
			// for, so later records that did reach the disk do not make
			// the garbage corruption.
			name: "record end garbage, later records unsynced",
			mode: SyncNone,
			damage: func(b []byte, cut, recEnd int) []byte {
				for i := cut; i < recEnd; i++ {
					b[i] ^= 0xff
				}
				return b
			},
			laterKept: true,
		},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			base, want := buildLog(t, v.mode, 40)
			names := base.names()
			require.GreaterOrEqual(t, len(names), 3, "the log must have rotated")
			newest := names[len(names)-1]
			recs := recordsOf(base[newest])
			require.GreaterOrEqual(t, len(recs), 3)
			require.Equal(t, want[len(want)-1].lsn, recs[len(recs)-1].lsn, "the newest segment holds the last record")
			tail := recs[len(recs)-3:]
			if v.laterKept {
				for _, r := range tail {
					require.LessOrEqual(t, r.synced, uint64(tail[0].off), "LSN %d must not vouch for the records before it", r.lsn)
				}
			}

			for _, r := range tail {
				for cut := r.off; cut < r.end; cut++ {
					files := base.clone()
					files[newest] = v.damage(files[newest], cut, r.end)
					keep := int(r.lsn) - 1 // the records before the torn one
					if cut >= r.dataEnd {
						// Only padding is lost or damaged: the record is whole.
						keep = int(r.lsn)
						if v.laterKept {
							keep = len(want)
						}
					}
					checkRepaired(t, files.mount(t), want[:keep], fmt.Sprintf("cut at %s offset %d (LSN %d)", newest, cut, r.lsn))
				}
			}
		})
	}
}

// checkRepaired opens the log on fs, expecting a replay of exactly want,
// appends two records and checks that a reopen replays want and them.
func checkRepaired(t *testing.T, fs vfs.FS, want []entry, where string) {
	t.Helper()
	l, got, err := tryOpen(fs, Options{}, 0)
	require.NoError(t, err, where)
	requireReplay(t, want, got, where+": replay after repair")

	next := uint64(len(want)) + 1
	added := appendN(t, l, 9000, 2)
	require.Equal(t, []uint64{next, next + 1}, lsnsOf(added), "%s: LSNs of new records", where)
	require.NoError(t, l.Close(), where)

	l, got, err = tryOpen(fs, Options{}, 0)
	require.NoError(t, err, "%s: reopen after appending", where)
	require.NoError(t, l.Close())
	requireReplay(t, append(slices.Clip(want), added...), got, where+": replay after appending")
	assertAligned(t, fs)
}

// requireReplay compares replayed records LSN by LSN, so that a failure
// shows which records are missing rather than every payload.
func requireReplay(t *testing.T, want, got []entry, what string) {
	t.Helper()
	require.Equal(t, lsnsOf(want), lsnsOf(got), "%s: LSNs", what)
	for i := range want {
		require.Equal(t, want[i].payload, got[i].payload, "%s: payload of LSN %d", what, want[i].lsn)
	}
}

func lsnsOf(es []entry) []uint64 {
	lsns := make([]uint64, len(es))
	for i, e := range es {
		lsns[i] = e.lsn
	}
	return lsns
}

// reframe re-encodes, in place, the record r of segment b with LSN lsn.
func reframe(b []byte, r recPos, lsn uint64) {
	copy(b[r.off:], appendRecord(nil, lsn, r.synced, r.payload))
}

// rewriteHeader sets a header field of segment b and reseals the header
// with a valid CRC, as a writer of another version or a confused one would.
func rewriteHeader(b []byte, set func(h []byte)) {
	set(b)
	binary.LittleEndian.PutUint32(b[24:], crc32.Checksum(b[:24], crcTable))
}

// TestDamageFailsOpen damages a log in the ways that are not a torn tail;
// each must fail Open with an error that says which file, and where.
func TestDamageFailsOpen(t *testing.T) {
	base, _ := buildLog(t, SyncAlways, 40)
	names := base.names()
	require.GreaterOrEqual(t, len(names), 3, "the log must have rotated")
	oldest, middle, newest := names[0], names[1], names[len(names)-1]
	oldRecs, newRecs := recordsOf(base[oldest]), recordsOf(base[newest])
	require.GreaterOrEqual(t, len(oldRecs), 3)
	require.GreaterOrEqual(t, len(newRecs), 3)
	r := oldRecs[1] // a record of the oldest segment with others after it
	middleFirst := recordsOf(base[middle])[0].lsn
	require.Greater(t, newRecs[2].synced, uint64(newRecs[1].off),
		"under SyncAlways a record vouches for the ones before it")

	cases := []struct {
		name   string
		damage func(f segFiles)
		after  uint64
		want   error  // ErrCorrupt if nil
		named  string // the file the error must name
		offset bool   // the error must give an offset
	}{
		{
			name:   "payload bit flip in an older segment",
			damage: func(f segFiles) { f[oldest][r.off+recHeaderSize+5] ^= 0x04 },
			named:  oldest, offset: true,
		},
		{
			name:   "record length changed",
			damage: func(f segFiles) { f[oldest][r.off+4] ^= 0x08 },
			named:  oldest, offset: true,
		},
		{
			name:   "record length beyond the segment",
			damage: func(f segFiles) { f[oldest][r.off+6] ^= 0x40 },
			named:  oldest, offset: true,
		},
		{
			name:   "record CRC damaged",
			damage: func(f segFiles) { f[oldest][r.off] ^= 0xff },
			named:  oldest, offset: true,
		},
		{
			name:   "record synced-to damaged",
			damage: func(f segFiles) { f[oldest][r.off+16] ^= 0x01 },
			named:  oldest, offset: true,
		},
		{
			name:   "zeroed record in an older segment",
			damage: func(f segFiles) { clear(f[oldest][r.off:r.end]) },
			named:  oldest, offset: true,
		},
		{
			name:   "older segment cut short mid-record",
			damage: func(f segFiles) { f[oldest] = f[oldest][:r.off+recHeaderSize+3] },
			named:  oldest, offset: true,
		},
		{
			name:   "LSN skips ahead within a segment",
			damage: func(f segFiles) { reframe(f[oldest], r, r.lsn+1) },
			named:  oldest, offset: true,
		},
		{
			name:   "LSN repeats within a segment",
			damage: func(f segFiles) { reframe(f[oldest], r, r.lsn-1) },
			named:  oldest, offset: true,
		},
		{
			name:   "bad magic",
			damage: func(f segFiles) { f[middle][3] = 'X' },
			named:  middle, offset: true,
		},
		{
			name:   "segment header CRC mismatch",
			damage: func(f segFiles) { f[middle][12] ^= 0x01 },
			named:  middle, offset: true,
		},
		{
			name:   "zeroed header of an older segment",
			damage: func(f segFiles) { clear(f[oldest][:headerSize]) },
			named:  oldest, offset: true,
		},
		{
			name:   "short older segment",
			damage: func(f segFiles) { f[middle] = f[middle][:headerSize/2] },
			named:  middle, offset: true,
		},
		{
			name: "header first LSN does not match the file name",
			damage: func(f segFiles) {
				rewriteHeader(f[middle], func(h []byte) { binary.LittleEndian.PutUint64(h[16:], middleFirst+1) })
			},
			named: middle, offset: true,
		},
		{
			name: "unknown format version",
			damage: func(f segFiles) {
				rewriteHeader(f[middle], func(h []byte) { binary.LittleEndian.PutUint32(h[8:], formatVersion+1) })
			},
			want:  ErrIncompatibleFormat,
			named: middle,
		},
		{
			name:   "middle segment missing",
			damage: func(f segFiles) { delete(f, middle) },
			named:  oldest, offset: true,
		},
		{
			name:   "damaged record in the newest segment vouched for by a later one",
			damage: func(f segFiles) { f[newest][newRecs[1].off+recHeaderSize] ^= 0x01 },
			named:  newest, offset: true,
		},
		{
			name:   "zeroed record in the newest segment vouched for by a later one",
			damage: func(f segFiles) { clear(f[newest][newRecs[1].off:newRecs[1].end]) },
			named:  newest, offset: true,
		},
		{
			name:   "zeroed header of the newest segment, records after it",
			damage: func(f segFiles) { clear(f[newest][:headerSize]) },
			named:  newest, offset: true,
		},
		{
			name:   "newest segment all zeros",
			damage: func(f segFiles) { clear(f[newest]) },
			named:  newest, offset: true,
		},
		{
			name:   "newest segment emptied",
			damage: func(f segFiles) { f[newest] = nil },
			named:  newest, offset: true,
		},
		{
			name:   "newest segment cut short after a record",
			damage: func(f segFiles) { f[newest] = f[newest][:newRecs[1].end] },
			named:  newest, offset: true,
		},
		{
			name:   "newest segment cut short inside a record",
			damage: func(f segFiles) { f[newest] = f[newest][:newRecs[1].end+5] },
			named:  newest, offset: true,
		},
		{
			name:   "newest segment missing",
			damage: func(f segFiles) { delete(f, newest) },
			named:  newest,
		},
		{
			name:   "STATE damaged",
			damage: func(f segFiles) { f[stateName][len("dedup wal state 1\nnewest ")] ^= 0x01 },
			named:  stateName, offset: true,
		},
		{
			name:   "segments missing before the replay start",
			damage: func(f segFiles) { delete(f, oldest) },
			named:  middle,
		},
		{
			name:   "one LSN missing before the replay start",
			damage: func(f segFiles) { delete(f, oldest) },
			after:  middleFirst - 2,
			named:  middle,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := base.clone()
			tc.damage(files)
			l, _, err := tryOpen(files.mount(t), Options{}, tc.after)
			require.Error(t, err, "Open must refuse the damaged log")
			assert.Nil(t, l)
			want := tc.want
			if want == nil {
				want = ErrCorrupt
			}
			assert.ErrorIs(t, err, want)
			for _, other := range []error{ErrCorrupt, ErrIncompatibleFormat} {
				if other != want {
					assert.NotErrorIs(t, err, other)
				}
			}
			assert.Contains(t, err.Error(), tc.named, "the error must name the file")
			if tc.offset {
				assert.Contains(t, err.Error(), "offset", "the error must give the offset")
			}
		})
	}
}

// TestReplayStartAtFirstSegment checks the boundary of the LSN gap check:
// a log whose oldest segment starts right after the replay start is whole.
func TestReplayStartAtFirstSegment(t *testing.T) {
	base, want := buildLog(t, SyncAlways, 40)
	names := base.names()
	delete(base, names[0])
	first := recordsOf(base[names[1]])[0].lsn
	l, got, err := tryOpen(base.mount(t), Options{ReadOnly: true}, first-1)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	requireReplay(t, want[first-1:], got, "replay from the oldest segment")
}

// failSyncData is an errorfs injector that, once armed, fails every
// SyncData of a segment file, and counts those it sees.
type failSyncData struct {
	err   error // what an armed SyncData returns
	armed atomic.Bool
	calls atomic.Int64
}

func (f *failSyncData) String() string { return "fail SyncData of .wal files" }

func (f *failSyncData) MaybeError(op errorfs.Op) error {
	if op.Kind != errorfs.OpFileSyncData || !strings.HasSuffix(op.Path, ".wal") {
		return nil
	}
	f.calls.Add(1)
	if f.armed.Load() {
		return f.err
	}
	return nil
}

// TestFailedSyncIsFailStop fails one fsync of the WAL. The record waiting
// on it must fail, and so must everything after, even once the disk works
// again: a failed fsync is never retried, not even one interrupted by a
// signal, which may have consumed the report of a failed writeback. What
// was acknowledged before survives a reopen.
func TestFailedSyncIsFailStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"an I/O error", errorfs.ErrInjected},
		{"EINTR", syscall.EINTR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			inj := &failSyncData{err: tc.err}
			l, _ := openLog(t, errorfs.Wrap(mem, inj), Options{Sync: SyncAlways}, 0)
			acked := appendN(t, l, 0, 5)

			inj.armed.Store(true)
			lsn, err := l.Append([]byte("doomed"))
			require.NoError(t, err, "Append only queues the record")
			err = l.Wait(lsn)
			require.ErrorIs(t, err, tc.err, "Wait must report the failed fsync")
			inj.armed.Store(false)
			calls := inj.calls.Load()

			_, err = l.Append([]byte("after"))
			assert.ErrorIs(t, err, tc.err, "the log is fail-stop")
			assert.ErrorIs(t, l.Err(), tc.err)
			assert.ErrorIs(t, l.Close(), tc.err, "Close returns the sticky error")
			assert.Equal(t, calls, inj.calls.Load(), "no fsync may follow the failed one")

			l, got, err := tryOpen(mem, Options{}, 0)
			require.NoError(t, err)
			require.NoError(t, l.Close())
			require.GreaterOrEqual(t, len(got), len(acked))
			requireReplay(t, acked, got[:len(acked)], "every acknowledged record survives")
			assert.LessOrEqual(t, len(got), len(acked)+1, "only the record whose fsync failed may follow them")
		})
	}
}

// TestLogWithoutStateDropsZeroSegment opens a log as an earlier build
// left it, without STATE: a crash while that build created a segment left
// the newest one all zeros, which Open removes. A zeroed header with
// records after it is damage there too.
func TestLogWithoutStateDropsZeroSegment(t *testing.T) {
	base, want := buildLog(t, SyncAlways, 40)
	delete(base, stateName)
	names := base.names()
	newest := names[len(names)-1]
	kept := int(recordsOf(base[newest])[0].lsn) - 1

	files := base.clone()
	clear(files[newest])
	fs := files.mount(t)
	l, got, err := tryOpen(fs, Options{}, 0)
	require.NoError(t, err)
	requireReplay(t, want[:kept], got, "the records before the zero segment")
	require.NoError(t, l.Close())
	_, err = fs.Stat(fs.PathJoin(logDir, newest))
	assert.Error(t, err, "the zero segment is removed")

	files = base.clone()
	clear(files[newest][:headerSize])
	_, _, err = tryOpen(files.mount(t), Options{}, 0)
	assert.ErrorIs(t, err, ErrCorrupt)
}

// TestTornTailReportSaysWhatRecoveryKnows tears the last record of the
// newest segment. Recovery cannot tell that from damage to the last
// synced group, so its report must not claim that nothing truncated was
// acknowledged.
func TestTornTailReportSaysWhatRecoveryKnows(t *testing.T) {
	base, want := buildLog(t, SyncAlways, 40)
	names := base.names()
	newest := names[len(names)-1]
	recs := recordsOf(base[newest])
	last := recs[len(recs)-1]
	base[newest][last.off+recHeaderSize] ^= 0x01

	var log testutil.Log
	l, got, err := tryOpen(base.mount(t), Options{Logger: log.Logger()}, 0)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	requireReplay(t, want[:len(want)-1], got, "the records before the torn one")
	logged := log.Records()
	require.Len(t, logged, 1)
	assert.Equal(t, "wal: truncated a torn tail", logged[0].Message)
	assert.Equal(t, slog.LevelWarn, logged[0].Level, "what was truncated may have been acknowledged")
	assert.Equal(t, int64(last.off), logged[0].Attrs["offset"])
	assert.Equal(t, want[len(want)-1].lsn, logged[0].Attrs["first_lost_lsn"])
	assert.Contains(t, logged[0].Attrs["path"], newest)
}

// TestRepairOfMissingSegmentMovesLSNsPast deletes the newest segment:
// Repair cannot know its records, so the LSNs after it pass every LSN a
// segment of its size could have held.
func TestRepairOfMissingSegmentMovesLSNsPast(t *testing.T) {
	base, want := buildLog(t, SyncAlways, 40)
	names := base.names()
	newest := names[len(names)-1]
	firstMissing := recordsOf(base[newest])[0].lsn
	delete(base, newest)
	fs := base.mount(t)
	d, err := Repair(fs, logDir, 0, 4096, true)
	require.NoError(t, err)
	require.NotNil(t, d)
	assert.Equal(t, firstMissing, d.FirstLost)
	assert.Greater(t, d.Next, want[len(want)-1].lsn, "past every LSN used")
	assert.Greater(t, d.Next, firstMissing+uint64((4096-headerSize)/recordSize(1)), "past every LSN the segment could hold")

	l, got, err := tryOpen(fs, Options{}, 0)
	require.NoError(t, err)
	requireReplay(t, want[:d.FirstLost-1], got, "the records before the missing segment")
	lsn, err := l.Append([]byte("after"))
	require.NoError(t, err)
	assert.Equal(t, d.Next, lsn)
	require.NoError(t, l.Wait(lsn))
	require.NoError(t, l.Close())
	l, got, err = tryOpen(fs, Options{}, 0)
	require.NoError(t, err, "the cut LSNs are no gap")
	require.NoError(t, l.Close())
	assert.Equal(t, lsn, got[len(got)-1].lsn)
}

// TestRepairRebuildsDamagedState damages STATE: the segments are whole,
// so Repair keeps them all and writes STATE anew, keeping the damaged one
// aside.
func TestRepairRebuildsDamagedState(t *testing.T) {
	base, want := buildLog(t, SyncAlways, 40)
	base[stateName][len(base[stateName])-3] ^= 0x01 // in the CRC line
	fs := base.mount(t)
	_, _, err := tryOpen(fs, Options{}, 0)
	require.ErrorIs(t, err, ErrCorrupt)

	d, err := Repair(fs, logDir, 0, 4096, true)
	require.NoError(t, err)
	require.NotNil(t, d)
	assert.Equal(t, fs.PathJoin(logDir, stateName), d.Segment)
	assert.Zero(t, d.FirstLost, "no record is lost")
	assert.Equal(t, want[len(want)-1].lsn+1, d.Next)
	_, err = fs.Stat(fs.PathJoin(logDir, stateName+".broken"))
	assert.NoError(t, err, "the damaged STATE is kept aside")
	l, got, err := tryOpen(fs, Options{}, 0)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	requireReplay(t, want, got, "every record")
}
