package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
	"github.com/seed42300104/dedup/idempotency"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// newStore creates a store in a new directory, lets fill write to it, and
// closes it.
func newStore(t *testing.T, fill func(*dedup.Store)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "s")
	s, err := dedup.Open(dir, nil)
	require.NoError(t, err)
	fill(s)
	require.NoError(t, s.Close())
	return dir
}

// TestExportImportKeepsRecordsWhole moves a store holding HTTP idempotency
// records through export and import, and checks that the middleware on
// the new store replays the stored response, and that every mark keeps
// its record and its deadline to the nanosecond.
func TestExportImportKeepsRecordsWhole(t *testing.T) {
	calls := 0
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"charge":%d}`, calls)
	})
	post := func(s *dedup.Store) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/charges", strings.NewReader(`{"amount":5}`))
		r.Header.Set("Idempotency-Key", "order-9")
		w := httptest.NewRecorder()
		idempotency.Middleware(s, nil)(app).ServeHTTP(w, r)
		return w
	}
	var stuck dedup.Claim
	src := newStore(t, func(s *dedup.Store) {
		first := post(s)
		require.Equal(t, http.StatusCreated, first.Code)
		var err error
		stuck, err = s.Begin([]byte("job-stuck"), []byte{0xab}, time.Hour, 2*time.Hour)
		require.NoError(t, err)
		_, err = s.CheckAndMark([]byte{0xff, 0xfe}, time.Hour)
		require.NoError(t, err)
	})

	code, exported, stderr := runIn(t, nil, "--dir", src, "export")
	require.Equal(t, exitOK, code, stderr)
	assert.Regexp(t, `(?m)^\{"kind":"record","id":"idempotency\\u0000\\u0000order-9",`, exported)
	assert.Regexp(t, `(?m)^\{"kind":"mark","id":"//4=","id_base64":true,`, exported)

	dst := filepath.Join(t.TempDir(), "d")
	code, stdout, stderr := runIn(t, []byte(exported), "--dir", dst, "import")
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, "3 marks added, 0 already present, 0 expired and skipped\n", stdout)

	marks := func(dir string) map[string]dedup.Mark {
		s, err := dedup.Open(dir, &dedup.Options{ReadOnly: true})
		require.NoError(t, err)
		defer s.Close()
		all := map[string]dedup.Mark{}
		require.NoError(t, s.Scan(nil, false, func(m dedup.Mark) bool {
			m.ID = append([]byte(nil), m.ID...)
			all[string(m.ID)] = m
			return true
		}))
		return all
	}
	want, got := marks(src), marks(dst)
	require.Len(t, got, len(want))
	for id, w := range want {
		g := got[id]
		assert.True(t, w.Deadline.Equal(g.Deadline), "%q: deadline %v, want %v to the nanosecond", id, g.Deadline, w.Deadline)
		assert.Equal(t, w.Record, g.Record, "%q: the record moves whole", id)
	}
	assert.Equal(t, stuck.Token, got["job-stuck"].Record.Token)

	s := storetest.OpenAt(t, dst, nil)
	again := post(s)
	assert.Equal(t, http.StatusCreated, again.Code, again.Body.String())
	assert.Equal(t, `{"charge":1}`, again.Body.String(), "the stored response, not a second call")
	assert.Equal(t, 1, calls)
}

// TestImportRejectsBadRecords checks that import names record lines it
// cannot restore and writes nothing.
func TestImportRejectsBadRecords(t *testing.T) {
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	for _, tc := range []struct {
		name, line, want string
	}{
		{"unknown kind", `{"kind":"tombstone","id":"a","deadline":%q}`, `"kind" "tombstone"`},
		{"record without record", `{"kind":"record","id":"a","deadline":%q}`, `a "record" line with no "record"`},
		{"record in no state", `{"kind":"record","id":"a","deadline":%q,"record":{"state":9,"token":1,"ttl_ns":1000000000}}`, "record state 9"},
		{"record without TTL", `{"kind":"record","id":"a","deadline":%q,"record":{"state":2,"token":1}}`, "record TTL 0s"},
		{"mark with record", `{"kind":"mark","id":"a","deadline":%q,"record":{"state":2,"token":1,"ttl_ns":1}}`, `a "mark" line with a "record"`},
		{"unknown field", `{"id":"a","deadline":%q,"dedline":1}`, `malformed JSON: json: unknown field "dedline"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			in := fmt.Sprintf(`{"id":"fine","deadline":%q}`+"\n"+tc.line+"\n", later, later)
			code, stdout, stderr := runIn(t, []byte(in), "--dir", dir, "import")
			assert.Equal(t, exitError, code)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, "1 bad lines, nothing imported")
			assert.Contains(t, stderr, "line 2: "+tc.want)
			assert.NoDirExists(t, dir)
		})
	}
}

// TestJSONOutputEverywhere checks that every command that printed text or
// nothing under -o json writes JSON: import, snapshot, forget, verify on
// damage, and stats of an empty store.
func TestJSONOutputEverywhere(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	code, stdout, stderr := runIn(t, nil, "--dir", dir, "-o", "json", "import")
	require.Equal(t, exitOK, code, stderr)
	assert.JSONEq(t, `{"added":0,"present":0,"expired":0}`, stdout)

	code, stdout, stderr = runIn(t, nil, "--dir", dir, "-o", "json", "stats")
	require.Equal(t, exitOK, code, stderr)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &st), stdout)
	assert.Equal(t, []any{}, st["generations"], "an empty store has no generations, not null")

	code, stdout, stderr = runIn(t, nil, "--dir", dir, "-o", "json", "forget", "a")
	require.Equal(t, exitOK, code, stderr)
	assert.JSONEq(t, `{"id":"a","was_live":false}`, stdout)

	copyDir := filepath.Join(t.TempDir(), "copy")
	code, stdout, stderr = runIn(t, nil, "--dir", dir, "-o", "json", "snapshot", copyDir)
	require.Equal(t, exitOK, code, stderr)
	assert.JSONEq(t, fmt.Sprintf(`{"snapshot":%q}`, copyDir), stdout)

	seg := filepath.Join(dir, "wal", "0000000000000001.wal")
	require.NoError(t, os.WriteFile(seg, []byte("not a WAL segment at all"), 0o644))
	code, stdout, stderr = runIn(t, nil, "--dir", dir, "-o", "json", "verify")
	assert.Equal(t, exitCorrupt, code)
	assert.Contains(t, stderr, "store corrupt")
	var vr admin.VerifyReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &vr), "verify reports damage on stdout: %q", stdout)
	assert.False(t, vr.OK)
	assert.Contains(t, vr.Damage, "0000000000000001.wal")
	assert.NotNil(t, vr.Uncovered)
}

// TestTablesTellIDsApart checks that tables print IDs that would look
// alike, or break a line, so that they can be told apart: a binary ID is
// Go-quoted, and so is one holding a newline.
func TestTablesTellIDsApart(t *testing.T) {
	binary, text := []byte("\xff\xfeabc"), []byte("//5hYmM=") // the base64 of binary
	dir := newStore(t, func(s *dedup.Store) {
		_, err := s.CheckAndMarkBatch([][]byte{binary, text}, 0)
		require.NoError(t, err)
	})
	code, stdout, stderr := runIn(t, nil, "--dir", dir, "scan")
	require.Equal(t, exitOK, code, stderr)
	assert.Regexp(t, `(?m)^"\\xff\\xfeabc"\t\S+\tlive$`, stdout)
	assert.Regexp(t, `(?m)^//5hYmM=\t\S+\tlive$`, stdout)

	code, stdout, stderr = runIn(t, nil, "--dir", dir, "mark", "two\nlines", "\xff\xfeabc")
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, "ID             new\n\"two\\nlines\"   true\n\"\\xff\\xfeabc\"  false\n", stdout)

	code, stdout, stderr = runIn(t, nil, "--dir", dir, "-o", "json", "get", "\xff\xfeabc")
	require.Equal(t, exitOK, code, stderr)
	assert.JSONEq(t, `{"id":"//5hYmM=","id_base64":true,"live":true}`, stdout)

	code, stdout, stderr = runIn(t, nil, "--dir", dir, "explain", "\xff\xfeabc")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "ID        \"\\xff\\xfeabc\"\n")
}

// TestStatsAndCompactMeasureDiskAlike checks that stats and compact report
// one measure of the disk an unchanged store uses: the files under --dir.
func TestStatsAndCompactMeasureDiskAlike(t *testing.T) {
	dir := newStore(t, func(s *dedup.Store) {
		_, err := s.CheckAndMarkBatch([][]byte{[]byte("a"), []byte("b")}, 0)
		require.NoError(t, err)
		require.NoError(t, s.Checkpoint())
		_, err = s.CheckAndMark([]byte("c"), 0)
		require.NoError(t, err)
	})
	want, err := admin.DiskBytes(dir)
	require.NoError(t, err)

	code, stdout, stderr := runIn(t, nil, "--dir", dir, "-o", "json", "stats")
	require.Equal(t, exitOK, code, stderr)
	var st struct {
		DiskBytes int64 `json:"disk_bytes"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &st))
	assert.Equal(t, want, st.DiskBytes, "stats")

	code, stdout, stderr = runIn(t, nil, "--dir", dir, "-o", "json", "compact")
	require.Equal(t, exitOK, code, stderr)
	var c struct {
		Before, After compactSizes
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &c))
	assert.Equal(t, want, c.Before.DiskBytes, "compact, before")
	after, err := admin.DiskBytes(dir)
	require.NoError(t, err)
	assert.Equal(t, after, c.After.DiskBytes, "compact, after")
}

// TestRepairSaysWhatItCannotFix damages a filter snapshot, which the WAL
// repair cannot mend: repair says the WAL is fine but the store does not
// open, what to do, and exits 3, as verify does.
func TestRepairSaysWhatItCannotFix(t *testing.T) {
	dir := newStore(t, func(s *dedup.Store) {
		_, err := s.CheckAndMarkBatch([][]byte{[]byte("a"), []byte("b")}, 0)
		require.NoError(t, err)
		require.NoError(t, s.Checkpoint())
	})
	snaps, err := filepath.Glob(filepath.Join(dir, "index", "filters", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, snaps)
	f, err := os.OpenFile(snaps[0], os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("garbage"), 100)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	for _, yes := range []bool{false, true} {
		args := []string{"--dir", dir, "repair"}
		if yes {
			args = append(args, "--yes")
		}
		code, stdout, stderr := runIn(t, nil, args...)
		assert.Equal(t, exitCorrupt, code, "%v", args)
		assert.Contains(t, stdout, "no damage in the WAL\nthe store does not open: dedup: store corrupt")
		assert.Contains(t, stdout, "delete\n    that file, and the next open rebuilds the filters")
		assert.Contains(t, stderr, "the store does not open, and repair cannot fix that")
	}
	code, stdout, _ := runIn(t, nil, "--dir", dir, "-o", "json", "repair")
	assert.Equal(t, exitCorrupt, code)
	var r repairReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	assert.False(t, r.Damaged)
	assert.False(t, r.Opens)
	assert.Contains(t, r.OpenError, "filter snapshot")

	code, _, stderr := runIn(t, nil, "--dir", dir, "verify")
	assert.Equal(t, exitCorrupt, code)
	assert.Contains(t, stderr, "store corrupt")
	code, _, _ = runIn(t, nil, "--dir", dir, "get", "a")
	assert.Equal(t, exitCorrupt, code, "any command on a damaged store exits 3")
}

// TestRepairWithoutCheckpoint damages the index's CHECKPOINT, which says
// where the WAL begins: repair cannot check the WAL, says so and what to
// do, and exits 3.
func TestRepairWithoutCheckpoint(t *testing.T) {
	dir := newStore(t, func(s *dedup.Store) {
		_, err := s.CheckAndMark([]byte("a"), 0)
		require.NoError(t, err)
		require.NoError(t, s.Checkpoint())
	})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "index", "CHECKPOINT"), []byte("garbage"), 0o644))

	code, stdout, stderr := runIn(t, nil, "--dir", dir, "repair")
	assert.Equal(t, exitCorrupt, code)
	assert.Contains(t, stdout, "the WAL cannot be checked: the index's checkpoint is damaged\nthe store does not open: dedup: store corrupt")
	assert.Contains(t, stdout, "restore the store from a copy made by\n    dedupctl snapshot")
	assert.Contains(t, stderr, "repair cannot fix that: dedup: store corrupt")

	code, stdout, _ = runIn(t, nil, "--dir", dir, "-o", "json", "repair")
	assert.Equal(t, exitCorrupt, code)
	var r repairReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &r), stdout)
	assert.False(t, r.WALChecked)
	assert.Contains(t, r.OpenError, "store corrupt")
}

// TestExitCodes checks that each kind of failure has its own exit code.
func TestExitCodes(t *testing.T) {
	dir := newStore(t, func(*dedup.Store) {})
	held, err := dedup.Open(dir, nil)
	require.NoError(t, err)
	code, _, stderr := runIn(t, nil, "--dir", dir, "get", "a")
	assert.Equal(t, exitLocked, code, stderr)
	require.NoError(t, held.Close())

	code, _, _ = runIn(t, nil, "--dir", filepath.Join(t.TempDir(), "nowhere"), "get", "a")
	assert.Equal(t, exitNotStore, code)

	for name, err := range map[string]error{
		"usage":               usageError{io.EOF},
		"empty ID":            dedup.ErrEmptyID,
		"TTL":                 fmt.Errorf("x: %w", dedup.ErrInvalidTTL),
		"corrupt":             fmt.Errorf("x: %w", dedup.ErrCorrupt),
		"not a store":         dedup.ErrNotStore,
		"locked":              dedup.ErrLocked,
		"permission (EACCES)": &os.PathError{Op: "open", Path: "LOCK", Err: syscall.EACCES},
		"permission (EPERM)":  &os.PathError{Op: "open", Path: "LOCK", Err: syscall.EPERM},
		"full":                fmt.Errorf("x: %w", dedup.ErrFull),
		"something else":      io.ErrUnexpectedEOF,
	} {
		want := map[string]int{
			"usage": exitUsage, "empty ID": exitUsage, "TTL": exitUsage, "corrupt": exitCorrupt,
			"not a store": exitNotStore, "locked": exitLocked, "permission (EACCES)": exitPermission,
			"permission (EPERM)": exitPermission, "full": exitFull, "something else": exitError,
		}[name]
		assert.Equal(t, want, exitCode(err), name)
	}
}

// TestFilterForgetsWhatItCouldNotWrite closes the reader of filter's
// output after its first line: the marks of the lines filter could not
// write are forgotten, so that a second run passes them, and the run
// exits 1 saying so.
func TestFilterForgetsWhatItCouldNotWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	var in strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&in, "id-%04d\n", i)
	}
	w := &closingWriter{max: len("id-0000\n")}
	var stderr strings.Builder
	code := run([]string{"--dir", dir, "filter"}, strings.NewReader(in.String()), w, &stderr)
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr.String(), "the marks of the 1023 new lines not written were forgotten again")
	assert.Contains(t, stderr.String(), "1024 lines read, 1 new passed, 0 duplicates dropped, 0 bad passed, 1023 new not written and forgotten")

	code, stdout, errOut := runIn(t, []byte(in.String()), "--dir", dir, "filter")
	require.Equal(t, exitOK, code, errOut)
	assert.Equal(t, 2999, strings.Count(stdout, "\n"), "every line but the one written passes")
	assert.NotContains(t, stdout, "id-0000\n")
}

// closingWriter takes max bytes and then fails as a closed pipe does.
type closingWriter struct{ max, n int }

func (w *closingWriter) Write(p []byte) (int, error) {
	n := min(len(p), w.max-w.n)
	w.n += n
	if n < len(p) {
		return n, syscall.EPIPE
	}
	return n, nil
}
