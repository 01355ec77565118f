// Command consumer reads an at-least-once stream, a file of JSON-lines
// messages in which some are delivered more than once, and applies each
// message exactly once, even across kill -9 and a restart that reads the
// stream again from the start.
//
//	go run ./examples/consumer -dir /tmp/consumer -in messages.jsonl -out applied.log
//
// Applying a message appends "ID TOKEN" to the output file and fsyncs it:
// that is the side effect, standing for a write to another system. Between
// the effect and the mark a crash could leave the effect done and the ID
// unmarked, so the effect carries the fencing token of the ID's lease, and
// on start the consumer first completes the IDs whose effects are in the
// output: the effect is the proof, and the token shows no other owner has
// taken the ID over meanwhile.
//
// The consumer is written against dedup.Backend, the API that the
// embedded store shares with the Redis one. Ctrl-C stops it between
// messages: a message begun is applied and marked first.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/seed42300104/dedup"
)

func main() {
	dir := flag.String("dir", "consumer-store", "the dedup store's directory")
	in := flag.String("in", "messages.jsonl", "the stream: JSON lines with an \"id\"")
	out := flag.String("out", "applied.log", "where applied messages go")
	lease := flag.Duration("lease", 2*time.Second, "how long one message may take before another run may take it over")
	work := flag.Duration("work", 0, "how long applying a message takes, to watch it")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *dir, *in, *out, *lease, *work); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, dir, in, out string, lease, work time.Duration) error {
	store, err := dedup.Open(dir, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	effects, err := openEffects(out)
	if err != nil {
		return err
	}
	defer effects.Close()
	if err := reconcile(ctx, store, out); err != nil {
		return err
	}
	stream, err := os.Open(in)
	if err != nil {
		return err
	}
	defer stream.Close()
	var applied, duplicates int
	sc := bufio.NewScanner(stream)
	for sc.Scan() {
		var msg struct{ ID string }
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil || msg.ID == "" {
			return fmt.Errorf("a bad message %q", sc.Text())
		}
		done, err := apply(ctx, store, effects, []byte(msg.ID), lease, work)
		if errors.Is(err, context.Canceled) {
			log.Printf("interrupted: %d messages applied, %d duplicates skipped", applied, duplicates)
			return nil
		}
		if err != nil {
			return err
		}
		if done {
			applied++
		} else {
			duplicates++
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	log.Printf("%d messages applied, %d duplicates skipped", applied, duplicates)
	return nil
}

// apply applies one message unless it was applied before, and reports
// whether it did. A message another run holds (a crashed run's lease) is
// waited for. Once ctx ends no message is begun; one begun is finished.
func apply(ctx context.Context, store dedup.Backend, effects *os.File, id []byte, lease, work time.Duration) (bool, error) {
	for {
		claim, err := store.BeginContext(ctx, id, nil, lease, 0)
		if err != nil {
			return false, err
		}
		switch claim.Outcome {
		case dedup.Completed, dedup.Mismatch:
			return false, nil
		case dedup.InProgress:
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(min(time.Until(claim.LeaseEnds), 100*time.Millisecond) + time.Millisecond):
			}
			continue
		}
		// The effect, then the mark: see the package comment.
		ctx := context.WithoutCancel(ctx)
		time.Sleep(work)
		if _, err := fmt.Fprintf(effects, "%s %d\n", id, claim.Token); err != nil {
			return false, errors.Join(err, store.ReleaseContext(ctx, id, claim.Token))
		}
		if err := effects.Sync(); err != nil {
			return false, err // the effect may be on disk: do not release, reconcile decides
		}
		return true, store.CompleteContext(ctx, id, claim.Token, nil)
	}
}

// openEffects opens the output for appending, first cutting a line a
// crash left half written: that effect was not applied.
func openEffects(path string) (*os.File, error) {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	keep := int64(bytes.LastIndexByte(b, '\n') + 1)
	if err := f.Truncate(keep); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(keep, 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, f.Sync()
}

// reconcile completes every ID whose effect is in the output under the
// token of its lease: a run killed between effect and mark left them in
// progress. Completing an ID already completed with its token is a no-op;
// a stale token means the record has expired since. (A real consumer
// would keep a checkpoint of the output rather than read it all.)
func reconcile(ctx context.Context, store dedup.Backend, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		id, tok, ok := strings.Cut(line, " ")
		token, err := strconv.ParseUint(tok, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("%s: a bad line %q", path, line)
		}
		if err := store.CompleteContext(ctx, []byte(id), token, nil); err != nil && !errors.Is(err, dedup.ErrStaleToken) {
			return fmt.Errorf("%s: completing %s: %w", path, id, err)
		}
	}
	return nil
}
