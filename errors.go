package dedup

import "errors"

// Errors returned by the store. Test for them with errors.Is: most are
// wrapped with the detail (file, offset, ID size) that explains them.
var (
	// ErrEmptyID is returned for a zero-length ID.
	ErrEmptyID = errors.New("dedup: empty ID")
	// ErrIDTooLong is returned for an ID longer than Options.MaxIDSize.
	ErrIDTooLong = errors.New("dedup: ID too long")
	// ErrInvalidTTL is returned for a negative TTL or one above
	// Options.MaxTTL, for a lease not within (0, TTL], and for a TTL whose
	// deadline would pass the last one the store can represent (in 2262).
	ErrInvalidTTL = errors.New("dedup: invalid TTL")
	// ErrValueTooLarge is returned by Begin and Complete when a record's
	// fingerprint and result pass Options.MaxValueSize.
	ErrValueTooLarge = errors.New("dedup: value too large")
	// ErrStaleToken is returned by Complete and Release with a token that
	// no longer holds the key: another owner took it over after the lease
	// ended, or it was released, completed (for Release) or expired.
	ErrStaleToken = errors.New("dedup: stale token")
	// ErrInvalidOptions is returned by Open for options that make no sense.
	ErrInvalidOptions = errors.New("dedup: invalid options")
	// ErrFull is returned by a write of new marks that would take the
	// store past Options.MaxMarks, or that comes once it has reached
	// Options.MaxDiskBytes, when WhenFull drops nothing; nothing of it is
	// applied.
	ErrFull = errors.New("dedup: store full")
	// ErrClosed is returned by every call on a closed Store. A call that
	// returns it had no effect: Close waits for the calls under way to get
	// their own answers, so a mark made durable by Close is always
	// acknowledged to its caller.
	ErrClosed = errors.New("dedup: store closed")
	// ErrReadOnly is returned by write calls on a store opened ReadOnly.
	ErrReadOnly = errors.New("dedup: store is read-only")
	// ErrLocked is returned by Open when another Store, in this process or
	// another, holds the directory: a writable Store excludes every other,
	// a read-only one excludes writable ones. The error names the LOCK file
	// and, when it is known, the PID of the holder.
	ErrLocked = errors.New("dedup: store locked")
	// ErrPermission is returned when the file system refuses the store
	// access to one of its files or directories: permission bits, or a
	// read-only mount. The error names the file. A store that may be read
	// but not written opens with Options.ReadOnly.
	ErrPermission = errors.New("dedup: permission denied")
	// ErrCorrupt is returned when stored data fails a check: a CRC, a magic
	// number, an LSN sequence, a filter snapshot or a Pebble block. The
	// wrapped error names the file and offset.
	ErrCorrupt = errors.New("dedup: store corrupt")
	// ErrIncompatibleFormat is returned by Open for a store written in a
	// format version this build does not know.
	ErrIncompatibleFormat = errors.New("dedup: incompatible format version")
	// ErrFailedSync is returned by Open, for writing, of a store whose WAL
	// met a failed write or fsync earlier in this boot (or in a boot the
	// clock cannot tell from this one). The page cache may still hold
	// records that never reached the disk, and replaying them would
	// acknowledge marks a power loss or an eviction can take away. After a
	// reboot the store opens and recovers what the disk holds; a read-only
	// Open works meanwhile, and warns.
	ErrFailedSync = errors.New("dedup: a write or fsync failed in this boot")
	// ErrNotStore is returned by Open with ReadOnly or MustExist for a
	// directory that holds no store.
	ErrNotStore = errors.New("dedup: not a store")
	// ErrInvalidRecord is returned by Restore for an idempotency record in
	// no known state.
	ErrInvalidRecord = errors.New("dedup: invalid record")
)
