// Package dedup is an embedded, crash-safe deduplication store: it
// remembers the IDs a process has handled, for a TTL, so that a retried
// message, request or command is recognised as a duplicate.
//
// # Types
//
// A Store is one open store directory. CheckAndMark answers "have I seen
// this ID? if not, it is mine now" in one atomic step; CheckAndMarkBatch
// does the same for many IDs in one WAL record. Seen only asks, Forget
// removes a mark. Options configures a Store; Stats reports on one.
// Backend is the part of that API a Store shares with a store on Redis,
// with a context for each call (CheckAndMarkContext and so on).
//
// A mark can carry an idempotency Record instead: Begin starts work on a
// key under a lease with a fencing token and reports a Claim (acquired,
// in progress, completed with its result, or a fingerprint mismatch);
// Complete stores the result and Release gives the key up leaving no
// mark. Package idempotency builds HTTP middleware and an idempotent
// message consumer on them. Package admin serves a live store's read-only
// views (stats, explain, scan, verify) over HTTP, for dedupctl --addr.
//
// # Data path
//
// A check-and-mark hashes the ID once and asks the Bloom filters of the
// live generations first: an ID none of them may hold is new without any
// further look, and Seen answers it without taking the store's lock. Otherwise the memtable and then Pebble are asked. New IDs
// are appended to the write-ahead log as one record, applied to the
// memtable and the filters, and the call returns once the record is
// durable. A checkpoint later writes the memtable to Pebble as one sorted
// table per generation, excises the generations whose marks have all
// expired, snapshots the filters and lets the WAL segments behind it go.
//
// # Guarantees
//
//   - Atomic: among concurrent callers exactly one sees isNew for an ID
//     while its mark is live; in a batch a repeated ID is new at most once.
//   - Durable: under SyncAlways (the default) a call returns only after its
//     WAL record is fsynced, and a duplicate answer only after the mark it
//     found is.
//   - Crash-safe: after kill -9 or power loss every acknowledged mark is
//     seen again, and no ID acknowledged as new is new again before its TTL
//     ends.
//   - Exact expiry: a mark is live while now < deadline, decided on every
//     read, across reopen. A step of the wall clock does not drop marks
//     for good: a generation is excised by a wall time that has kept pace
//     with the time since boot (CLOCK_BOOTTIME on Linux), across restarts
//     in one boot, or held for Options.ClockJumpGrace, so a step undone
//     within the grace brings its marks back.
//   - Damage is never served silently: a torn WAL tail is truncated; any
//     other damage fails with ErrCorrupt naming the file and offset, except
//     damage confined to the records written since the newest segment's
//     last fsync, which no later record vouches for and which cannot be
//     told from a torn write (it is truncated, and logged as such).
//   - Bad input gets a named error and changes nothing; a failed write or
//     fsync makes the store fail-stop for writes until it is reopened.
//
// # Expiry and capacity
//
// A generation is the set of marks whose deadlines fall in one time bucket
// whose span is a quarter of their TTL, rounded down to a power of two
// seconds, so marks of one TTL live in 5 to 9 generations. Each checkpoint
// writes one Pebble table per generation, so a dropped generation's
// tables hold nothing else and Pebble deletes them whole when its key
// range is excised. The span is a trade: each live generation is one more
// filter for a lookup to test, and halving the span would tighten the
// 1.25 × TTL bound on reclaiming to 1.125 × TTL at the price of twice the
// generations.
//
// A new generation's filter is sized for the fullest earlier generation of
// its TTL class, so steady traffic gets one filter per generation; one
// that outgrows its estimate grows a chain of larger filters, keeping the
// false-positive rate within 4/3 of the target. Each filter of a chain
// costs a lookup one more cache miss, so the checkpoint after a chain
// grows merges it into one filter, read back from Pebble without the lock
// and swapped in under it; marks written meanwhile are added too.
//
// Stats.EffectiveWindow is estimated from each generation's first write
// and longest TTL, which WAL records and filter snapshots carry: never
// below the true age of the oldest live mark, and at most one write
// interval above it.
//
// MaxMarks counts marks until their generation is dropped, expired ones
// included. MaxDiskBytes is measured at Open and after each checkpoint, so
// a store passes it by at most what one checkpoint interval writes; the
// WAL keeps its current segment and the spare it prepares once that is
// half full, which no drop gives back. Under DropOldest the drop is durable
// from the checkpoint it requests at once: a crash before that checkpoint
// completes may bring the marks back, erring on the side of remembering.
//
// # Concurrency
//
// All methods are safe for concurrent use. Writes serialise on one lock
// from their check to their WAL append; they wait for durability outside
// it, so concurrent callers share fsyncs (group commit). A batch of 256
// marks or more writes its WAL record and, on Linux, starts its fsync in
// the kernel before it updates the index, so the fsync runs meanwhile.
// Reads share the lock; Scan reads under it but calls its callback
// without it, so the callback may call the store. Close lets the calls
// under way finish with their own answers: ErrClosed means a call had no
// effect. A write that would take the memtable past twice its bound waits,
// before it writes anything, for the checkpoint that empties it; a
// Context method gives that wait up when its context ends, with no effect.
//
// A store directory is held by one writable Store at a time, or by any
// number of read-only ones, in one process or several, whatever path
// names it (ErrLocked otherwise). Its files are created 0600 and its
// directories 0700 unless Options.FileMode and DirMode say otherwise.
package dedup
