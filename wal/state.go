package wal

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/internal/fsutil"
)

// stateName is the file that says what the segments alone cannot: which
// segment is the newest (so that a deleted one is missed), and which LSNs
// a repair cut (so that they are never given out again). A log with this
// file creates each segment under a temporary name and renames it only
// once its header is durable; a log without it was written by a build
// before that, and recovery allows the crash states such a build leaves.
// It is replaced whole (fsutil.ReplaceFile), after the segment it names
// is durable:
//
//	dedup wal state 1
//	newest <first LSN of the newest segment, 0 if none>
//	cut <from> <to>          one line per repair cut: LSNs void for good
//	crc <CRC32C of the lines above, 8 hex digits>
//
// This layout is part of the on-disk format.
const stateName = "STATE"

const stateVersion = 1

// lsnRange is the LSNs from..to, both included.
type lsnRange struct{ from, to uint64 }

// logState is the content of the STATE file.
type logState struct {
	newest uint64
	cuts   []lsnRange
}

// floor is the highest LSN a repair cut: new records get LSNs above it.
func (st logState) floor() uint64 {
	var f uint64
	for _, c := range st.cuts {
		f = max(f, c.to)
	}
	return f
}

// void reports whether the LSNs from..to lie in one repair cut, so that
// the log may skip them.
func (st logState) void(from, to uint64) bool {
	return slices.ContainsFunc(st.cuts, func(c lsnRange) bool { return c.from <= from && to <= c.to })
}

func (st logState) encode() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "dedup wal state %d\nnewest %d\n", stateVersion, st.newest)
	for _, c := range st.cuts {
		fmt.Fprintf(&b, "cut %d %d\n", c.from, c.to)
	}
	fmt.Fprintf(&b, "crc %08x\n", crc32.Checksum(b.Bytes(), crcTable))
	return b.Bytes()
}

// readState reads the STATE file of the log in dir; found is false if
// there is none.
func readState(fs vfs.FS, dir string) (st logState, found bool, err error) {
	path := fs.PathJoin(dir, stateName)
	b, err := fsutil.ReadFile(fs, path)
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	bad := func(off int, what string) error {
		return fmt.Errorf("%w: %s: offset %d: %s", ErrCorrupt, path, off, what)
	}
	body, sum, ok := bytes.Cut(b, []byte("crc "))
	if !ok || len(sum) != 9 || sum[8] != '\n' {
		return st, true, bad(len(body), "no CRC line")
	}
	if want, err := strconv.ParseUint(string(sum[:8]), 16, 32); err != nil || uint32(want) != crc32.Checksum(body, crcTable) {
		return st, true, bad(len(body), "CRC mismatch")
	}
	off := 0
	for i, line := range strings.SplitAfter(string(body), "\n") {
		if line == "" {
			break
		}
		if i == 0 {
			v, ok := strings.CutPrefix(strings.TrimSpace(line), "dedup wal state ")
			if !ok {
				return st, true, bad(off, fmt.Sprintf("unreadable line %q", line))
			}
			if v != strconv.Itoa(stateVersion) {
				return st, true, fmt.Errorf("%w: %s: state version %s, this build reads %d", ErrIncompatibleFormat, path, v, stateVersion)
			}
			off += len(line)
			continue
		}
		f := strings.Fields(line)
		nums := make([]uint64, 0, 2)
		for _, s := range f[min(len(f), 1):] {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return st, true, bad(off, fmt.Sprintf("unreadable line %q", line))
			}
			nums = append(nums, n)
		}
		switch {
		case len(f) == 0:
			return st, true, bad(off, "empty line")
		case f[0] == "newest" && len(nums) == 1:
			st.newest = nums[0]
		case f[0] == "cut" && len(nums) == 2 && nums[0] <= nums[1]:
			st.cuts = append(st.cuts, lsnRange{nums[0], nums[1]})
		default:
			return st, true, bad(off, fmt.Sprintf("unreadable line %q", line))
		}
		off += len(line)
	}
	return st, true, nil
}

// writeState replaces the STATE file of the log in dir.
func writeState(fs vfs.FS, dir string, st logState) error {
	return fsutil.ReplaceFile(fs, fs.PathJoin(dir, stateName), st.encode())
}
