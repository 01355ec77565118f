package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
)

// Marks that watchedStore makes between the first and the second answer
// of its stats.
const (
	watchNew        = 30
	watchDuplicates = 10
)

// watchedStore serves the admin handler of liveStore's store, which gets
// watchNew new marks and watchDuplicates duplicates right after the
// handler's first answer, before the client has it: exactly what a
// watcher's second refresh must count, whatever the timing.
func watchedStore(t *testing.T) string {
	t.Helper()
	s, _ := liveStore(t)
	h := admin.Handler(s, nil)
	var answers atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if answers.Add(1) != 1 {
			return
		}
		for i := range watchNew {
			isNew, err := s.CheckAndMark(fmt.Appendf(nil, "watched-%d", i), time.Hour)
			assert.True(t, isNew && err == nil, "watched-%d: %v", i, err)
		}
		for range watchDuplicates {
			isNew, err := s.CheckAndMark([]byte("old-1"), time.Hour)
			assert.True(t, !isNew && err == nil, "old-1: %v", err)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestWatchJSONLinesRateTheMarksMadeBetweenRefreshes(t *testing.T) {
	addr := watchedStore(t)
	code, stdout, stderr := runIn(t, nil, "--addr", addr, "-o", "json", "stats", "--watch", "--count", "2", "--interval", "100ms")
	require.Equal(t, exitOK, code, stderr)
	var lines []watchLine
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var l watchLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), sc.Text())
		lines = append(lines, l)
	}
	require.Len(t, lines, 2, stdout)
	first, second := lines[0], lines[1]
	assert.Nil(t, first.Rates, "the first refresh has nothing to take rates against")
	assert.Zero(t, first.Elapsed)
	require.NotNil(t, second.Rates, stdout)
	require.Positive(t, second.Elapsed)
	secs := second.Elapsed.Seconds()
	assert.InEpsilon(t, watchNew/secs, second.Rates.New, 1e-9)
	assert.InEpsilon(t, watchDuplicates/secs, second.Rates.Duplicates, 1e-9)
	appends := second.Counters.WALAppends - first.Counters.WALAppends
	assert.GreaterOrEqual(t, appends, uint64(watchNew), "each new mark is a WAL record")
	assert.InEpsilon(t, float64(appends)/secs, second.Rates.WALAppends, 1e-9)
	assert.Positive(t, second.Rates.WALSyncs)
	assert.Positive(t, second.Rates.WALAppendBytes)
	assert.Equal(t, first.Marks+watchNew, second.Marks, "live marks is a gauge")
	assert.Positive(t, second.EffectiveWindow)
	assert.Positive(t, second.WALBytes)
	assert.False(t, second.FailStopped)
	assert.NotContains(t, stdout, ansiHomeClear)
}

// watchTableLine matches a refresh as a line of text, with its rates
// (or "-") and the elapsed time they are taken over.
var watchTableLine = regexp.MustCompile(`^\S+Z  new/s (\S+)  duplicates/s (\S+)  WAL appends/s \S+  fsyncs/s \S+  WAL bytes/s \S+  marks (\d+)  effective window \S+  WAL bytes \d+  fail-stopped false  \((.*)\)$`)

func TestWatchWritesALinePerRefreshWhenNotATerminal(t *testing.T) {
	addr := watchedStore(t)
	code, stdout, stderr := runIn(t, nil, "--addr", addr, "stats", "--watch", "--count", "2", "--interval", "100ms")
	require.Equal(t, exitOK, code, stderr)
	assert.NotContains(t, stdout, ansiHomeClear, "a pipe gets no control sequences")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	require.Len(t, lines, 2, stdout)
	first, second := watchTableLine.FindStringSubmatch(lines[0]), watchTableLine.FindStringSubmatch(lines[1])
	require.NotNil(t, first, lines[0])
	require.NotNil(t, second, lines[1])
	assert.Equal(t, []string{"-", "-", "first refresh"}, []string{first[1], first[2], first[4]})
	firstMarks, _ := strconv.Atoi(first[3])
	assert.Equal(t, strconv.Itoa(firstMarks+watchNew), second[3])

	// The elapsed time is printed to the millisecond and the rates to
	// the hundredth: the rate of the true elapsed time lies within
	// those roundings of the printed figures.
	over, ok := strings.CutPrefix(second[4], "over ")
	require.True(t, ok, second[4])
	elapsed, err := strconv.ParseFloat(strings.TrimSuffix(over, "s"), 64)
	require.NoError(t, err, over)
	require.Greater(t, elapsed, 0.0005)
	for i, n := range map[int]float64{1: watchNew, 2: watchDuplicates} {
		rate, err := strconv.ParseFloat(second[i], 64)
		require.NoError(t, err, second[i])
		assert.GreaterOrEqual(t, rate, n/(elapsed+0.0005)-0.005, "%s over %vs", second[i], elapsed)
		assert.LessOrEqual(t, rate, n/(elapsed-0.0005)+0.005, "%s over %vs", second[i], elapsed)
	}
}

func TestWatchRedrawsInPlaceOnATerminal(t *testing.T) {
	var b bytes.Buffer
	g := &globals{output: "table"}
	l := &watchLine{Time: time.Now(), Marks: 7, EffectiveWindow: time.Hour, WALBytes: 4096, Counters: &admin.Counters{}}
	require.NoError(t, printWatch(&b, g, true, l))
	l.Elapsed, l.Rates = time.Second, &watchRates{New: 12.5, Duplicates: 2, WALAppends: 12.5, WALSyncs: 3, WALAppendBytes: 1200}
	require.NoError(t, printWatch(&b, g, true, l))
	screens := strings.Split(b.String(), ansiHomeClear)
	require.Len(t, screens, 3, "each refresh homes the cursor and clears the screen first")
	assert.Empty(t, screens[0])
	assert.Regexp(t, `first refresh\n(.|\n)*new/s +-\n`, screens[1])
	assert.Regexp(t, `over 1\.000s\n(.|\n)*new/s +12\.50\n(.|\n)*WAL bytes/s +1200\n(.|\n)*marks +7\n(.|\n)*effective window +1h0m0s\n(.|\n)*fail-stopped +false\n`, screens[2])
}

func TestWatchIsRefusedWithoutAddr(t *testing.T) {
	s, addr := liveStore(t)
	idle := t.TempDir()
	idleStore, err := dedup.Open(idle, nil)
	require.NoError(t, err)
	require.NoError(t, idleStore.Close())
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a store nobody holds", []string{"--dir", idle, "stats", "--watch"}, "--watch needs --addr"},
		{"the live store's dir", []string{"--dir", s.Dir(), "stats", "--watch"}, "mount admin.Handler"},
		{"zero interval", []string{"--addr", addr, "stats", "--watch", "--interval", "0s"}, "--interval 0s is not positive"},
		{"negative count", []string{"--addr", addr, "stats", "--watch", "--count", "-1"}, "--count -1 is negative"},
		{"interval without watch", []string{"--addr", addr, "stats", "--interval", "1s"}, "go with --watch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runIn(t, nil, tc.args...)
			assert.Equal(t, exitUsage, code, stderr)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

// fakeStats serves the given stats documents in turn, the last one again
// once they run out, as an admin handler would.
func fakeStats(t *testing.T, docs ...string) string {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		i := min(int(n.Add(1))-1, len(docs)-1)
		fmt.Fprintln(w, docs[i])
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestWatchShowsNoRatesWhenTheCountersWentBack(t *testing.T) {
	addr := fakeStats(t,
		`{"marks":9,"counters":{"single_new":10,"wal_appends":10}}`,
		`{"marks":3,"counters":{"single_new":3,"wal_appends":3}}`,
		`{"marks":4,"counters":{"single_new":4,"wal_appends":4}}`)
	code, stdout, stderr := runIn(t, nil, "--addr", addr, "-o", "json", "stats", "--watch", "--count", "3", "--interval", "10ms")
	require.Equal(t, exitOK, code, stderr)
	var lines []watchLine
	for _, s := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		var l watchLine
		require.NoError(t, json.Unmarshal([]byte(s), &l), s)
		lines = append(lines, l)
	}
	require.Len(t, lines, 3)
	assert.True(t, lines[1].Reset, "the process reopened the store")
	assert.Nil(t, lines[1].Rates, "a rate across a restart would be negative")
	require.NotNil(t, lines[2].Rates, "rates resume from the reopened store's counters")
	assert.InEpsilon(t, 1/lines[2].Elapsed.Seconds(), lines[2].Rates.New, 1e-9)
}

func TestWatchFailsOnAHandlerWithoutCounters(t *testing.T) {
	addr := fakeStats(t, `{"marks":9}`)
	code, stdout, stderr := runIn(t, nil, "--addr", addr, "stats", "--watch", "--count", "2")
	assert.Equal(t, exitError, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "carry no counters")
}
