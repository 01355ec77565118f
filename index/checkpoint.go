package index

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/atomicfs"

	"github.com/seed42300104/dedup/internal/fsutil"
	"github.com/seed42300104/dedup/ttl"
)

const (
	filtersDir     = "filters"
	checkpointFile = "CHECKPOINT"
	pebbleDir      = "db"
)

// HasData names the data in the index directory dir that only an index
// that was written to holds: a checkpoint or a Pebble table; "" if there
// is none. It tells an index that was only created, as an interrupted
// creation of a store leaves it, from one that holds marks.
func HasData(fs vfs.FS, dir string) (string, error) {
	if _, err := fs.Stat(fs.PathJoin(dir, checkpointFile)); err == nil {
		return "a checkpoint", nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	tables, err := fs.List(fs.PathJoin(dir, pebbleDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	for _, n := range tables {
		if strings.HasSuffix(n, ".sst") {
			return "Pebble table " + n, nil
		}
	}
	return "", nil
}

// checkpoint is what the CHECKPOINT file records: the WAL LSN that Pebble
// and the filter snapshots cover, and the snapshot file of each generation.
//
//	| magic "dedupckp" (8B) | version (4B) | gens (4B) | LSN (8B) |
//	| per generation: gen (8B), LSN of its snapshot file (8B) |
//	| CRC32C of all the above (4B) |
//
// Little-endian. Part of the on-disk format.
type checkpoint struct {
	lsn   uint64
	files map[ttl.Gen]uint64 // gen -> LSN in its snapshot's file name
	// stored says the file exists: the index was checkpointed, so Pebble
	// holds marks that the WAL may no longer have.
	stored bool
}

const (
	checkpointMagic   = "dedupckp"
	checkpointVersion = 1
)

func filterName(g ttl.Gen, lsn uint64) string {
	return fmt.Sprintf("%016x-%016x.bloom", uint64(g), lsn)
}

func (c checkpoint) encode() []byte {
	b := []byte(checkpointMagic)
	b = binary.LittleEndian.AppendUint32(b, checkpointVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.files)))
	b = binary.LittleEndian.AppendUint64(b, c.lsn)
	for _, g := range slices.Sorted(maps.Keys(c.files)) {
		b = binary.LittleEndian.AppendUint64(b, uint64(g))
		b = binary.LittleEndian.AppendUint64(b, c.files[g])
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// readCheckpoint reads the CHECKPOINT file; a missing one is the empty
// checkpoint of a new store.
func readCheckpoint(fs vfs.FS, dir string) (checkpoint, error) {
	path := fs.PathJoin(dir, checkpointFile)
	p, err := fsutil.ReadFile(fs, path)
	if errors.Is(err, os.ErrNotExist) {
		return checkpoint{files: map[ttl.Gen]uint64{}}, nil
	}
	if err != nil {
		return checkpoint{}, err
	}
	const fixed = len(checkpointMagic) + 16
	if len(p) < fixed+4 || string(p[:len(checkpointMagic)]) != checkpointMagic {
		return checkpoint{}, fmt.Errorf("%w: %s: offset 0: bad magic or short file", ErrCorrupt, path)
	}
	body, sum := p[:len(p)-4], binary.LittleEndian.Uint32(p[len(p)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return checkpoint{}, fmt.Errorf("%w: %s: offset %d: checkpoint CRC mismatch", ErrCorrupt, path, len(body))
	}
	h := body[len(checkpointMagic):]
	if v := binary.LittleEndian.Uint32(h); v != checkpointVersion {
		return checkpoint{}, fmt.Errorf("%w: %s: checkpoint format version %d", ErrIncompatibleFormat, path, v)
	}
	n := int(binary.LittleEndian.Uint32(h[4:]))
	if len(body) != fixed+16*n {
		return checkpoint{}, fmt.Errorf("%w: %s: offset %d: checkpoint length does not match its %d generations", ErrCorrupt, path, fixed, n)
	}
	c := checkpoint{lsn: binary.LittleEndian.Uint64(h[8:]), files: make(map[ttl.Gen]uint64, n), stored: true}
	for i := range n {
		e := body[fixed+16*i:]
		c.files[ttl.Gen(binary.LittleEndian.Uint64(e))] = binary.LittleEndian.Uint64(e[8:])
	}
	return c, nil
}

// loadFilters loads the snapshots the checkpoint names. If one is missing,
// or of the layout before blocks, it rebuilds every filter from Pebble
// instead. A damaged one is ErrCorrupt, and one of an unknown format
// ErrIncompatibleFormat: the operator decides whether to rebuild, which
// the error says how to do.
// rebuildAdvice is what to do about a filter snapshot that does not load.
const rebuildAdvice = "delete the filter snapshot and it is rebuilt from Pebble at the next Open"

func (ix *Index) loadFilters() error {
	fs := ix.opts.FS
	for g, lsn := range ix.ckpt.files {
		path := fs.PathJoin(ix.dir, filtersDir, filterName(g, lsn))
		p, err := fsutil.ReadFile(fs, path)
		if errors.Is(err, os.ErrNotExist) {
			ix.log().Warn("index: filter snapshot missing, rebuilding the filters from Pebble", "path", path)
			return ix.RebuildFilters()
		}
		if err != nil {
			return err
		}
		f, err := decodeGenFilter(path, p)
		if errors.Is(err, errUnblocked) {
			ix.log().Warn("index: filter snapshot unusable, rebuilding the filters from Pebble", "path", path, "err", err)
			return ix.RebuildFilters()
		}
		if err == nil && f.gen != g {
			err = fmt.Errorf("%w: %s: offset 16: holds generation %x", ErrCorrupt, path, uint64(f.gen))
		}
		if err != nil {
			return fmt.Errorf("%w; %s", err, rebuildAdvice)
		}
		ix.addGen(f)
	}
	if !ix.opts.ReadOnly {
		ix.removeStaleSnapshots()
	}
	return nil
}

// RebuildFilters replaces the filters with ones built from every key in
// Pebble. Open calls it when a snapshot is missing; repair tools call it
// for a damaged one. The next checkpoint persists them.
func (ix *Index) RebuildFilters() (err error) {
	defer ix.catchFatal(&err)
	if err := ix.failed(); err != nil {
		return err
	}
	it, err := ix.db.NewIter(nil)
	if err != nil {
		return ix.wrapPebble(err, "rebuilding filters")
	}
	filters := map[ttl.Gen]*genFilter{}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) <= ttl.GenSize {
			it.Close()
			return fmt.Errorf("%w: key %x is too short", ErrCorrupt, k)
		}
		g := ttl.DecodeGen(k)
		f := filters[g]
		if f == nil {
			f = newGenFilter(g, uint(ix.opts.ExpectedMarks), ix.opts.FalsePositiveRate)
			filters[g] = f
		}
		f.add(hashOf(k[ttl.GenSize:]), ix.opts.FalsePositiveRate)
	}
	if err := ix.wrapPebble(errors.Join(it.Error(), it.Close()), "rebuilding filters"); err != nil {
		return err
	}
	ix.filters = map[ttl.Gen]*genFilter{}
	ix.gens = nil
	for _, f := range filters {
		ix.addGen(f)
	}
	ix.publish()
	return nil
}

// Frozen is a memtable on its way to Pebble, with the filters as they were
// when it was frozen and the generations dropped then.
type Frozen struct {
	mem     *memtable
	filters map[ttl.Gen]*genFilter // clones of the dirty ones; nil for clean
	dropped []ttl.Gen              // wholly expired or dropped early: Persist deletes their key ranges
	// keepAfter holds, for a generation dropped early, the memtable's last
	// LSN at the drop: its marks applied later are written after the
	// excision, not dropped with it.
	keepAfter map[ttl.Gen]uint64
	merges    []*merge // chains to merge once persisted
}

// LSN is the WAL LSN the frozen state covers.
func (f *Frozen) LSN() uint64 { return f.mem.lastLSN }

// Merging reports whether the checkpoint picked filter chains to merge:
// MergeChains and EndMerges then follow EndCheckpoint.
func (f *Frozen) Merging() bool { return len(f.merges) > 0 }

// Dropped returns the generations the checkpoint drops, wholly expired or
// dropped early, in order.
func (f *Frozen) Dropped() []ttl.Gen { return f.dropped }

// DroppedEarly returns how many of Dropped were dropped early, by
// DropOldest, rather than wholly expired.
func (f *Frozen) DroppedEarly() int { return len(f.keepAfter) }

// Marks returns the number of IDs in the frozen memtable.
func (f *Frozen) Marks() int { return f.mem.len() }

// Freeze starts a checkpoint at now: the memtable stops taking writes, the
// changed filters are copied, and the generations wholly expired at now
// leave the read path, their filters discarded. Persist deletes their keys
// by excising each one's key range: no per-key work. The generations that
// grew a chain of filters are picked for MergeChains. The caller holds the
// exclusive lock.
func (ix *Index) Freeze(now time.Time) *Frozen {
	f := &Frozen{mem: ix.mem, filters: make(map[ttl.Gen]*genFilter, len(ix.filters)), keepAfter: ix.pendingDrops}
	f.dropped = slices.Collect(maps.Keys(ix.pendingDrops))
	ix.pendingDrops = nil
	for g, gf := range ix.filters {
		switch {
		case gf.end <= now.UnixNano():
			if _, early := f.keepAfter[g]; early {
				delete(f.keepAfter, g) // reopened since, and expired now
			} else {
				f.dropped = append(f.dropped, g)
			}
			ix.dropGen(g)
		case gf.dirty:
			f.filters[g] = gf.clone()
			gf.dirty = false
		default:
			f.filters[g] = nil
		}
	}
	slices.Sort(f.dropped)
	ix.startMerges(f)
	ix.frozen = append(ix.frozen, ix.mem)
	ix.mem = nextMemtable(ix.mem, ix.opts.MemtableMarks)
	return f
}

// Expired reports whether a generation has wholly expired at now, so that
// a checkpoint would drop it.
func (ix *Index) Expired(now time.Time) bool {
	for _, gf := range ix.gens {
		if gf.end <= now.UnixNano() {
			return true
		}
	}
	return false
}

// Persist ingests a frozen memtable into Pebble, writes the
// snapshots of the filters that changed and then the CHECKPOINT that names
// them, and removes the snapshots it no longer names. It needs no lock.
func (ix *Index) Persist(f *Frozen) (err error) {
	defer ix.catchFatal(&err)
	if err := ix.failed(); err != nil {
		return err
	}
	if err := ix.writeMemtable(f); err != nil {
		return err
	}
	fs := ix.opts.FS
	next := checkpoint{lsn: f.LSN(), files: make(map[ttl.Gen]uint64, len(f.filters)), stored: true}
	for g, gf := range f.filters {
		if gf == nil {
			next.files[g] = ix.ckpt.files[g]
			continue
		}
		next.files[g] = next.lsn
		// Replaced atomically: a checkpoint that covers no new record has
		// the LSN of the current one, whose snapshots it may be rewriting.
		if err := fsutil.ReplaceFile(fs, fs.PathJoin(ix.dir, filtersDir, filterName(g, next.lsn)), gf.encode()); err != nil {
			return err
		}
	}
	if err := fsutil.SyncDir(fs, fs.PathJoin(ix.dir, filtersDir)); err != nil {
		return err
	}
	if err := fsutil.ReplaceFile(fs, fs.PathJoin(ix.dir, checkpointFile), next.encode()); err != nil {
		return err
	}
	ix.ckpt = next
	ix.ckptLSN.Store(next.lsn)
	ix.removeStaleSnapshots()
	return nil
}

// removeIngestLeftovers removes the tables a crash left between their
// writing and their ingestion: the WAL replay rewrites what they held.
func (ix *Index) removeIngestLeftovers() {
	fs := ix.opts.FS
	names, err := fs.List(ix.dir)
	if err != nil {
		ix.log().Warn("index: leftover tables not looked for", "dir", ix.dir, "err", err)
		return
	}
	for _, n := range names {
		if strings.HasPrefix(n, "ingest-") && strings.HasSuffix(n, ".sst") {
			if err := fs.Remove(fs.PathJoin(ix.dir, n)); err != nil {
				ix.log().Warn("index: leftover table not removed", "err", err)
			}
		}
	}
}

// removeStaleSnapshots removes the filter snapshots the checkpoint does not
// name. One that cannot be removed is only reported: it wastes space, not
// correctness, and the next checkpoint or Open tries again.
func (ix *Index) removeStaleSnapshots() {
	fs := ix.opts.FS
	dir := fs.PathJoin(ix.dir, filtersDir)
	names, err := fs.List(dir)
	if err != nil {
		ix.log().Warn("index: stale filter snapshots not looked for", "dir", dir, "err", err)
		return
	}
	keep := make(map[string]bool, len(ix.ckpt.files))
	for g, lsn := range ix.ckpt.files {
		keep[filterName(g, lsn)] = true
	}
	for _, n := range names {
		if !keep[n] {
			if err := fs.Remove(fs.PathJoin(dir, n)); err != nil {
				ix.log().Warn("index: stale filter snapshot not removed", "err", err)
			}
		}
	}
}

// writeMemtable writes the frozen memtable into Pebble as one sorted table
// per generation, ingested together: no Pebble memtable, WAL or flush on
// the way. Each dropped generation's key range is excised first, and none
// of the memtable's marks in it is written but those applied after an
// early drop (see Frozen.keepAfter). A
// forgotten ID's older versions are deleted from every generation that
// existed when it was frozen, which is every one that can hold them.
func (ix *Index) writeMemtable(f *Frozen) error {
	m := f.mem
	gens := f.rows()

	// A crash between the excisions, the ingestion and the CHECKPOINT that
	// follows is safe: the dropped generations are expired, or dropped
	// early by DropOldest, and the next checkpoint drops them again; the
	// marks to keep are still in the WAL behind the old CHECKPOINT.
	for _, g := range f.dropped {
		start := time.Now()
		if err := ix.db.Excise(context.Background(), pebble.KeyRange{Start: g.Append(nil), End: (g + 1).Append(nil)}); err != nil {
			return ix.wrapPebble(err, "dropping a generation")
		}
		ix.compactions.reclaim.Add(int64(time.Since(start)))
	}

	// One table per generation: a new generation's first table overlaps
	// nothing and goes straight to the bottom level, and a dropped
	// generation's tables hold nothing else, so excising its key range
	// deletes them whole instead of rewriting their neighbours.
	var paths []string
	defer func() {
		for _, p := range paths {
			ix.opts.FS.Remove(p) // Pebble links what it ingests
		}
	}()
	for _, g := range slices.Sorted(maps.Keys(gens)) {
		rows := gens[g]
		m.sortRows(rows)
		err := ix.writeTable(&paths, m.lastLSN, func(w *sstable.Writer) error {
			key := make([]byte, 0, 64)
			value := make([]byte, 0, 64)
			for _, r := range rows {
				key = m.appendRowID(g.Append(key[:0]), r)
				if r.delete {
					if err := w.Delete(key); err != nil {
						return err
					}
					continue
				}
				var v []byte
				if r.hasValue {
					v = m.bytes(m.entry(int(r.entry)).value)
				}
				value = appendValue(value[:0], g, r.deadline, v)
				if err := w.Set(key, value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if len(paths) > 0 {
		if err := ix.db.Ingest(context.Background(), paths); err != nil {
			return ix.wrapPebble(err, "ingesting a checkpoint")
		}
	}
	return ix.failed()
}

// drops reports whether the checkpoint drops the mark of e: its
// generation is dropped, and e was not applied after an early drop.
func (f *Frozen) drops(e *memEntry) bool {
	if len(f.dropped) == 0 {
		return false // most checkpoints: no map lookup per mark
	}
	if keep, early := f.keepAfter[e.gen]; early && e.lsn > keep {
		return false
	}
	return slices.Contains(f.dropped, e.gen)
}

// rows returns the rows of each generation's table, unsorted.
func (f *Frozen) rows() map[ttl.Gen][]row {
	m := f.mem
	each := func(add func(g ttl.Gen, i int, delete bool)) {
		for i := range m.n {
			e := m.entry(i)
			if e.forgotten {
				for g := range f.filters {
					if e.deleted || g != e.gen {
						add(g, i, true)
					}
				}
			}
			if !e.deleted && !f.drops(e) {
				add(e.gen, i, false)
			}
		}
	}
	tables := m.groupRows(each)
	gens := make(map[ttl.Gen][]row, len(tables))
	for _, t := range tables {
		gens[t.gen] = t.rows
	}
	return gens
}

// writeTable writes a table to ingest for the checkpoint of lsn, its keys
// added by fill, and appends its path to paths.
func (ix *Index) writeTable(paths *[]string, lsn uint64, fill func(*sstable.Writer) error) error {
	fs := ix.opts.FS
	path := fs.PathJoin(ix.dir, fmt.Sprintf("ingest-%016x-%d.sst", lsn, len(*paths)))
	file, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	*paths = append(*paths, path)
	w := sstable.NewWriter(&tableWritable{file, bufio.NewWriterSize(file, tableBuffer)},
		ix.pebbleOpts.MakeWriterOptions(0, ix.db.FormatMajorVersion().MaxTableFormat()))
	if err := fill(w); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// tableBuffer is how much of a table a checkpoint gathers before each
// write system call. Pebble's own file writable buffers 4 KiB, so each
// 4 KiB data block took a call of its own.
const tableBuffer = 1 << 20

// tableWritable is the objstorage.Writable a checkpoint writes a table
// through: a file behind a large buffer.
type tableWritable struct {
	file vfs.File
	buf  *bufio.Writer
}

func (w *tableWritable) Write(p []byte) error {
	_, err := w.buf.Write(p)
	return err
}

// Finish makes the table durable and closes it.
func (w *tableWritable) Finish() error {
	err := w.buf.Flush()
	if err == nil {
		err = w.file.Sync()
	}
	return errors.Join(err, w.file.Close())
}

func (w *tableWritable) Abort() { w.file.Close() }

// EndCheckpoint ends a checkpoint whose Persist succeeded: the frozen
// memtable leaves the read path. After a failed Persist the caller must not write
// again (the frozen memtable stays readable), since the index can no
// longer be checkpointed. The caller holds the exclusive lock.
func (ix *Index) EndCheckpoint(f *Frozen) {
	ix.frozen = slices.DeleteFunc(ix.frozen, func(m *memtable) bool { return m == f.mem })
}

// ReadCheckpointLSN returns the WAL LSN the checkpoint of the index in dir
// covers, without opening the index: zero for an index never
// checkpointed.
func ReadCheckpointLSN(fs vfs.FS, dir string) (uint64, error) {
	c, err := readCheckpoint(fs, dir)
	return c.lsn, err
}

// CopyTo writes a consistent copy of the index into dir, which must not
// exist: Pebble's own checkpoint (hard links where it can), the filter
// snapshots and the CHECKPOINT naming them. The caller holds the lock that
// keeps checkpoints out, and has just run one, so the copy covers exactly
// the WAL up to CheckpointLSN. A fatal error of Pebble's while it copies,
// on any goroutine, fails the copy: the failed MANIFEST write has already
// changed state that Pebble copies from.
func (ix *Index) CopyTo(dir string) error {
	if err := ix.failed(); err != nil {
		return err
	}
	fs := ix.opts.FS
	if err := fsutil.MkdirAll(fs, fs.PathJoin(dir, filtersDir)); err != nil {
		return err
	}
	err := ix.awaitPebble(func() error { return ix.checkpointPebble(fs.PathJoin(dir, pebbleDir)) })
	if ferr := ix.failed(); ferr != nil {
		return ferr
	}
	if err != nil {
		return ix.wrapPebble(err, "checkpoint copy")
	}
	names := []string{checkpointFile}
	for g, lsn := range ix.ckpt.files {
		names = append(names, fs.PathJoin(filtersDir, filterName(g, lsn)))
	}
	for _, n := range names {
		if err := fsutil.CopyFile(fs, fs.PathJoin(ix.dir, n), fs.PathJoin(dir, n)); err != nil {
			return err
		}
	}
	return errors.Join(fsutil.SyncDir(fs, fs.PathJoin(dir, filtersDir)), fsutil.SyncDir(fs, dir))
}

// markerMove is the function in which Pebble panics when it cannot sync
// a directory, taking a failed fsync as beyond repair.
var markerMove = []byte(reflect.TypeFor[atomicfs.Marker]().PkgPath() + ".(*Marker).Move(")

// checkpointPebble has Pebble copy itself into dir. A directory sync of the
// copy that fails makes Pebble panic; that fsync is the copy's, though, not
// one of Pebble's own files', and the panic runs Checkpoint's deferred
// cleanup, which releases what it holds, so it fails the copy only.
func (ix *Index) checkpointPebble(dir string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			rerr, ok := r.(error)
			if !ok || !bytes.Contains(debug.Stack(), markerMove) {
				panic(r)
			}
			err = fmt.Errorf("syncing a directory of the copy: %w", rerr)
		}
	}()
	return ix.db.Checkpoint(dir)
}

// FilterDiskBytes returns the size of the filter snapshots on disk, 0 if
// they cannot be listed.
func (ix *Index) FilterDiskBytes() uint64 {
	fs := ix.opts.FS
	dir := fs.PathJoin(ix.dir, filtersDir)
	names, err := fs.List(dir)
	if err != nil {
		return 0
	}
	var n uint64
	for _, name := range names {
		if st, err := fs.Stat(fs.PathJoin(dir, name)); err == nil {
			n += uint64(st.Size())
		}
	}
	return n
}
