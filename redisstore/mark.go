// Marks: check-and-mark, Seen and Forget.

package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// CheckAndMarkContext reports whether id is new, that is, has no live
// mark, and if so marks it for ttl (0 means Options.DefaultTTL). Among
// concurrent callers, in any process, exactly one sees isNew for an ID.
func (s *Store) CheckAndMarkContext(ctx context.Context, id []byte, ttl time.Duration) (isNew bool, err error) {
	isNews, err := s.checkAndMarkBatch(ctx, [][]byte{id}, ttl, false)
	if err != nil {
		return false, err
	}
	return isNews[0], nil
}

// CheckAndMarkBatchContext is CheckAndMarkContext for many IDs, pipelined:
// isNew[i] answers for ids[i]. An ID repeated in the batch is sent once,
// and is new at most once, at its first occurrence. If any ID is invalid
// the whole batch is rejected and nothing is marked. Unlike the embedded
// store's, a batch is not atomic: its IDs live in different slots, and an
// error may come after some were marked (see the package doc on unknown
// outcomes).
func (s *Store) CheckAndMarkBatchContext(ctx context.Context, ids [][]byte, ttl time.Duration) (isNew []bool, err error) {
	return s.checkAndMarkBatch(ctx, ids, ttl, true)
}

// checkAndMarkBatch is CheckAndMarkBatchContext, counted as a batch or a
// single check.
func (s *Store) checkAndMarkBatch(ctx context.Context, ids [][]byte, ttl time.Duration, batch bool) (isNew []bool, err error) {
	defer s.counters.count(&err)
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	ttl, err = s.checkTTL(ttl)
	if err != nil {
		return nil, err
	}
	for i, id := range ids {
		if err := s.checkID(id); err != nil {
			return nil, fmt.Errorf("batch index %d: %w", i, err)
		}
	}
	isNew = make([]bool, len(ids))
	if len(ids) == 0 {
		return isNew, nil
	}
	n := s.nonces.next()
	marks := s.marks(ctx, ids, ttl, n)
	if err := s.sendMarks(ctx, marks, ttl, n); err != nil {
		return nil, s.undo(ctx, marks, n.String(), err)
	}
	for _, m := range marks {
		isNew[m.at] = m.isNew
	}
	s.counters.checked(batch, isNew)
	return isNew, nil
}

// markCmd is the SET of one distinct ID of a batch.
type markCmd struct {
	at    int // the index of the ID's first occurrence
	key   string
	cmd   *redis.Cmd
	isNew bool // the answer, once sent
}

// marks makes the SET NX of each distinct ID. Its reply is OK for a new
// mark and nil for a key already held: by another call, or, if go-redis
// sent the command more than once, maybe by this call's earlier attempt
// (see recheck). The marks, and the arguments of their commands, are each
// one allocation for the whole batch: a batch's IDs cost Redis's round
// trip and little more.
func (s *Store) marks(ctx context.Context, ids [][]byte, ttl time.Duration, n *nonce) []*markCmd {
	const nargs = 6 // set key nonce px ms nx
	var nonceArg, msArg any = n, millis(ttl)
	cmds := make([]markCmd, 0, len(ids))
	args := make([]any, 0, nargs*len(ids))
	var seen map[string]struct{}
	if len(ids) > 1 {
		seen = make(map[string]struct{}, len(ids))
	}
	for i, id := range ids {
		key := s.key(id)
		if seen != nil {
			if _, ok := seen[key]; ok {
				continue
			}
			seen[key] = struct{}{}
		}
		at := len(args)
		args = append(args, "set", key, nonceArg, "px", msArg, "nx")
		cmds = append(cmds, markCmd{at: i, key: key, cmd: redis.NewCmd(ctx, args[at:len(args):len(args)]...)})
	}
	n.cmds = int64(len(cmds))
	marks := make([]*markCmd, len(cmds))
	for i := range cmds {
		marks[i] = &cmds[i]
	}
	return marks
}

// sendMarks sends the SETs, pipelined, and reads their answers. With
// MinReplicas each primary's share is pipelined on a connection of its
// own, followed by WAIT.
func (s *Store) sendMarks(ctx context.Context, marks []*markCmd, ttl time.Duration, n *nonce) error {
	if s.opts.MinReplicas == 0 {
		s.process(ctx, marks)
		held, err := answer(marks, n)
		if err == nil && len(held) > 0 {
			err = s.recheck(ctx, held, ttl, n.String())
		}
		return s.sent(ctx, err)
	}
	groups, err := s.byPrimary(ctx, marks)
	if err != nil {
		return s.sent(ctx, err)
	}
	waits := make([]error, len(groups))
	var wg sync.WaitGroup
	i := 0
	for node, marks := range groups {
		wg.Add(1)
		go func(i int, node *redis.Client, marks []*markCmd) {
			defer wg.Done()
			waits[i] = s.sendReplicated(ctx, node, marks)
		}(i, node, marks)
		i++
	}
	wg.Wait()
	held, err := answer(marks, n)
	switch {
	case err != nil:
		return s.sent(ctx, err)
	case len(held) > 0:
		return fmt.Errorf("%w: a resent SET found its key held, maybe by an earlier attempt of this call on another connection, which WAIT cannot see", ErrNotReplicated)
	}
	return errors.Join(waits...)
}

// process sends the marks' commands, one alone or pipelined; their errors
// are the commands'.
func (s *Store) process(ctx context.Context, marks []*markCmd) {
	if len(marks) == 1 {
		_ = s.client.Process(ctx, marks[0].cmd)
		return
	}
	pipe := s.client.Pipeline()
	for _, m := range marks {
		_ = pipe.Process(ctx, m.cmd)
	}
	_, _ = pipe.Exec(ctx)
}

// recheck answers the marks whose key was held when go-redis may have
// sent their SET more than once, so that the holder may be this call's
// earlier attempt: SET NX GET replies nil (the key had gone, and is now
// this call's), this call's nonce (its own mark), or another's value.
func (s *Store) recheck(ctx context.Context, held []*markCmd, ttl time.Duration, nonce string) error {
	again := make([]*markCmd, len(held))
	for i, m := range held {
		again[i] = &markCmd{at: i, key: m.key, cmd: redis.NewCmd(ctx, "set", m.key, nonce, "px", millis(ttl), "nx", "get")}
	}
	s.process(ctx, again)
	for i, m := range again {
		v, err := m.cmd.Text()
		switch {
		case errors.Is(err, redis.Nil) || err == nil && v == nonce:
			held[i].isNew = true
		case err != nil:
			return fmt.Errorf("redisstore: SET %q NX GET: %w", m.key, err)
		}
	}
	return nil
}

// sendReplicated pipelines marks and WAIT on one connection of node, and
// returns what WAIT answered: the marks' replies are read by the caller,
// once every primary's share is sent.
func (s *Store) sendReplicated(ctx context.Context, node *redis.Client, marks []*markCmd) error {
	cn := node.Conn()
	defer cn.Close()
	var wait *redis.IntCmd
	_, _ = cn.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range marks {
			_ = p.Process(ctx, m.cmd)
		}
		wait = redis.NewIntCmd(ctx, "wait", s.opts.MinReplicas, s.opts.ReplicaTimeout.Milliseconds())
		return p.Process(ctx, wait)
	}) // the errors are the commands'
	return s.waited(wait, false)
}

// byPrimary groups marks by the primary of their key's slot.
func (s *Store) byPrimary(ctx context.Context, marks []*markCmd) (map[*redis.Client][]*markCmd, error) {
	groups := make(map[*redis.Client][]*markCmd)
	for _, m := range marks {
		node, err := s.primary(ctx, m.key)
		if err != nil {
			return nil, err
		}
		groups[node] = append(groups[node], m)
	}
	return groups, nil
}

// answer reads the replies of sent marks into their isNew. held lists the
// marks whose key was held while go-redis sent some command of the call
// more than once: their answer is unknown until rechecked.
func answer(marks []*markCmd, n *nonce) (held []*markCmd, err error) {
	resent := n.resent()
	for _, m := range marks {
		switch err := m.cmd.Err(); {
		case err == nil:
			m.isNew = true
		case errors.Is(err, redis.Nil):
			if resent {
				held = append(held, m)
			}
		default:
			return nil, fmt.Errorf("redisstore: SET %q NX: %w", m.key, err)
		}
	}
	return held, nil
}

// undoScript deletes a key if it holds the given value: a mark this call
// made, and no other's.
const undoScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`

// undoTimeout bounds how long a failed call spends taking its marks back.
const undoTimeout = time.Second

// undo takes back the marks of a failed call, so that a retry finds its
// IDs new, and returns cause, with what could not be taken back. It runs
// even if ctx has ended, for undoTimeout.
func (s *Store) undo(ctx context.Context, marks []*markCmd, nonce string, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	pipe := s.client.Pipeline()
	for _, m := range marks {
		pipe.Eval(ctx, undoScript, []string{m.key}, nonce)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%w (and the marks this call may have made could not be taken back: %v)", cause, err)
	}
	return cause
}

// SeenContext reports whether id has a live mark, without marking it.
func (s *Store) SeenContext(ctx context.Context, id []byte) (_ bool, err error) {
	defer s.counters.count(&err)
	if err := s.enter(ctx); err != nil {
		return false, err
	}
	if err := s.checkID(id); err != nil {
		return false, err
	}
	n, err := s.client.Exists(ctx, s.key(id)).Result()
	if err != nil {
		return false, fmt.Errorf("redisstore: EXISTS: %w", s.sent(ctx, err))
	}
	if n == 1 {
		s.counters.seen[1].Add(1)
	} else {
		s.counters.seen[0].Add(1)
	}
	return n == 1, nil
}

// ForgetContext removes the mark or record of id, if any, so that it is
// new again.
func (s *Store) ForgetContext(ctx context.Context, id []byte) (err error) {
	defer s.counters.count(&err)
	if err := s.enter(ctx); err != nil {
		return err
	}
	if err := s.checkID(id); err != nil {
		return err
	}
	key := s.key(id)
	return s.onPrimary(ctx, key, func(c conn) (bool, error) {
		cmd := redis.NewIntCmd(ctx, "del", key)
		if err := c.Process(ctx, cmd); err != nil {
			return false, fmt.Errorf("redisstore: DEL: %w", s.sent(ctx, err))
		}
		return false, nil
	})
}

// waited checks the reply of WAIT.
func (s *Store) waited(cmd *redis.IntCmd, retried bool) error {
	n, err := cmd.Result()
	switch {
	case err != nil:
		return fmt.Errorf("redisstore: WAIT: %w", err)
	case int(n) < s.opts.MinReplicas:
		return fmt.Errorf("%w: %d of %d within %v", ErrNotReplicated, n, s.opts.MinReplicas, s.opts.ReplicaTimeout)
	case retried:
		return fmt.Errorf("%w: an earlier attempt of this call wrote on another connection, which WAIT cannot see", ErrNotReplicated)
	}
	return nil
}
