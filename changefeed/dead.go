package changefeed

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/shard"
)

// ErrDeadLetterNotFound is a dead letter id that names no letter of the
// trigger (never one, replayed or dropped since).
var ErrDeadLetterNotFound = errors.New("changefeed: dead letter not found")

// deadKey is the record of the dead letter of change (index, seq) on
// shard s of n.
func deadKey(name string, s, n int, index uint64, seq uint16) string {
	return fmt.Sprintf("%s%020d.%05d", deadPrefix(name, s, n), index, seq)
}

// deadID returns the id of the letter on shard s whose record key ends
// in suffix ("<index>.<seq>").
func deadID(s int, suffix string) (string, bool) {
	is, ss, ok := strings.Cut(suffix, ".")
	index, err1 := strconv.ParseUint(is, 10, 64)
	seq, err2 := strconv.ParseUint(ss, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return "", false
	}
	return fmt.Sprintf("%d-%d-%d", s, index, seq), true
}

// parseDeadID splits a dead letter id into the change's shard (of n),
// Raft index and position in the entry.
func parseDeadID(id string, n int) (s int, index uint64, seq uint16, err error) {
	parts := strings.Split(id, "-")
	bad := fmt.Errorf("%w: id %q (want <shard>-<index>-<seq>, as listed)", ErrDeadLetterNotFound, id)
	if len(parts) != 3 {
		return 0, 0, 0, bad
	}
	sh, err1 := strconv.Atoi(parts[0])
	ix, err2 := strconv.ParseUint(parts[1], 10, 64)
	sq, err3 := strconv.ParseUint(parts[2], 10, 16)
	if err1 != nil || err2 != nil || err3 != nil || sh < 0 || sh >= n {
		return 0, 0, 0, bad
	}
	return sh, ix, uint16(sq), nil
}

func (r *deadRec) letter(id string, s int) DeadLetter {
	return DeadLetter{ID: id, Shard: s, Key: r.Key, Op: r.Op, Version: r.Version, Value: r.Value,
		Error: r.Error, Time: time.UnixMilli(r.TimeMS).UTC(), Replays: r.Replays}
}

// deadEntry is one dead letter as stored.
type deadEntry struct {
	key     string
	version uint64 // of its record
	shard   int
	index   uint64
	seq     uint16
	rec     deadRec
}

// readDead reads the dead letter id of trigger name (a stored name).
func (t *Triggers) readDead(ctx context.Context, name, id string) (*Trigger, deadEntry, error) {
	d, err := t.Get(ctx, name)
	if err != nil {
		return nil, deadEntry{}, err
	}
	n := t.cfg.Node.Shards()
	s, index, seq, err := parseDeadID(id, n)
	if err != nil {
		return nil, deadEntry{}, err
	}
	e := deadEntry{key: deadKey(name, s, n, index, seq), shard: s, index: index, seq: seq}
	res, err := t.cfg.Node.GetIn(ctx, shard.SystemSpace, e.key, shard.ReadOptions{Consistency: shard.Linearizable})
	if err != nil {
		return nil, deadEntry{}, fmt.Errorf("changefeed: read dead letter: %w", err)
	}
	if !res.Found {
		return nil, deadEntry{}, fmt.Errorf("%w: %q of trigger %q", ErrDeadLetterNotFound, id, name)
	}
	if err := msgpack.Unmarshal(res.Record.Value, &e.rec); err != nil {
		return nil, deadEntry{}, fmt.Errorf("changefeed: corrupt dead letter %q: %w", id, err)
	}
	e.version = res.Record.Version
	return d, e, nil
}

// DropDeadLetter deletes dead letter id of trigger name (a stored name):
// its change is given up for good.
func (t *Triggers) DropDeadLetter(ctx context.Context, name, id string) error {
	_, e, err := t.readDead(ctx, name, id)
	if err != nil {
		return err
	}
	v := e.version
	_, err = t.cfg.Node.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: e.key, Delete: true, Cond: shard.Cond{IfMatch: &v}}}, nil)
	if errors.Is(err, shard.ErrPrecondition) {
		return fmt.Errorf("%w: %q of trigger %q (replayed or dropped meanwhile)", ErrDeadLetterNotFound, id, name)
	}
	if err != nil {
		return fmt.Errorf("changefeed: drop dead letter: %w", err)
	}
	return nil
}

// ReplayResult is the outcome of replaying one dead letter.
type ReplayResult struct {
	ID string `json:"id"`
	// Delivered: the handler took the change and its writes committed;
	// the letter is gone.
	Delivered bool `json:"delivered"`
	// Error is the handler's error when it failed again; Dead is the
	// letter as it stays, with that error and one more replay counted.
	Error string      `json:"error,omitempty"`
	Dead  *DeadLetter `json:"dead,omitempty"`
}

// ReplayDeadLetter delivers the change of dead letter id of trigger name
// (a stored name) to the trigger's function now, whatever the trigger's
// state, as a batch of its own. When the handler succeeds its writes
// commit and the letter is deleted — in one Raft entry when every write
// is to the letter's shard, else the writes first (at least once). When
// the handler fails on the change again the letter stays, with the new
// error and its replay count raised, and the result says so; an error
// that is not the handler's (the function missing, the node overloaded)
// is returned and changes nothing.
func (t *Triggers) ReplayDeadLetter(ctx context.Context, name, id string) (ReplayResult, error) {
	d, e, err := t.readDead(ctx, name, id)
	if err != nil {
		return ReplayResult{}, err
	}
	return t.replay(ctx, d, id, e)
}

func (t *Triggers) replay(ctx context.Context, d *Trigger, id string, e deadEntry) (ReplayResult, error) {
	c := shard.Change{Shard: e.shard, Index: e.index, Seq: e.seq, Key: e.rec.Key, Version: e.rec.Version,
		Delete: e.rec.Op == "delete", Depth: e.rec.Depth}
	if !c.Delete {
		c.Value = e.rec.Value
	}
	cctx := shard.WithTriggerDepth(ctx, e.rec.Depth+1)
	select {
	case t.calls <- struct{}{}:
	case <-ctx.Done():
		return ReplayResult{}, ctx.Err()
	}
	res, err := t.cfg.Functions.CallChanges(cctx, lambdaCall(d, []shard.Change{c}))
	<-t.calls
	v := e.version
	if err != nil {
		if !handlerFault(err) {
			return ReplayResult{}, err
		}
		e.rec.Error, e.rec.Replays = err.Error(), e.rec.Replays+1
		b, _ := msgpack.Marshal(&e.rec)
		if _, werr := t.cfg.Node.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: e.key, Value: b, Cond: shard.Cond{IfMatch: &v}}}, nil); werr != nil {
			if errors.Is(werr, shard.ErrPrecondition) {
				return ReplayResult{}, fmt.Errorf("%w: %q of trigger %q (replayed or dropped meanwhile)", ErrDeadLetterNotFound, id, d.Name)
			}
			return ReplayResult{}, fmt.Errorf("changefeed: update dead letter: %w", werr)
		}
		l := e.rec.letter(id, e.shard)
		t.log.Warn("trigger dead letter replay failed", "trigger", d.Name, "id", id, "key", c.Key, "err", err)
		return ReplayResult{ID: id, Error: err.Error(), Dead: &l}, nil
	}
	del := shard.Op{Space: shard.SystemSpace, Key: e.key, Delete: true, Cond: shard.Cond{IfMatch: &v}}
	n := t.cfg.Node.Shards()
	local := !res.Direct
	for _, op := range res.Writes {
		if shard.For(op.Key, n) != e.shard {
			local = false
		}
	}
	if local {
		_, err = t.cfg.Node.Batch(ctx, append(res.Writes, del), nil)
	} else if err = t.applyWrites(ctx, res.Writes); err == nil {
		_, err = t.cfg.Node.Batch(ctx, []shard.Op{del}, nil)
	}
	if errors.Is(err, shard.ErrPrecondition) {
		return ReplayResult{}, fmt.Errorf("%w: %q of trigger %q (replayed or dropped meanwhile)", ErrDeadLetterNotFound, id, d.Name)
	}
	if err != nil {
		return ReplayResult{}, fmt.Errorf("changefeed: commit replay: %w", err)
	}
	t.log.Info("trigger dead letter replayed", "trigger", d.Name, "id", id, "key", c.Key)
	return ReplayResult{ID: id, Delivered: true}, nil
}

// ReplayDeadLetters replays every dead letter of trigger name (a stored
// name) in turn, as ReplayDeadLetter does, and returns their outcomes;
// it stops at the first error that is not the handler's.
func (t *Triggers) ReplayDeadLetters(ctx context.Context, name string) ([]ReplayResult, error) {
	dl, err := t.DeadLetters(ctx, name)
	if err != nil {
		return nil, err
	}
	out := []ReplayResult{}
	for _, l := range dl {
		d, e, err := t.readDead(ctx, name, l.ID)
		if errors.Is(err, ErrDeadLetterNotFound) {
			continue // replayed or dropped meanwhile
		}
		if err != nil {
			return out, err
		}
		r, err := t.replay(ctx, d, l.ID, e)
		if errors.Is(err, ErrDeadLetterNotFound) {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
