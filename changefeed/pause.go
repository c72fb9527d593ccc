package changefeed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/shard"
)

// ErrConflict is a pause or resume that raced another change of the
// trigger's state (HTTP 409): read the trigger and try again.
var ErrConflict = errors.New("changefeed: trigger state changed concurrently")

// Where Resume starts each shard.
const (
	// ResumeCheckpoint goes on from each shard's checkpoint; when the feed
	// was trimmed past one, Resume fails with ErrExpired and changes
	// nothing.
	ResumeCheckpoint = "checkpoint"
	// ResumeNow skips every change up to now.
	ResumeNow = "now"
	// ResumeBeginning goes on from the checkpoint where the feed still
	// holds it, else from the oldest change the feed holds: it skips only
	// what was trimmed.
	ResumeBeginning = "beginning"
)

// Gap is a shard whose feed was trimmed past a trigger's checkpoint: the
// changes after index Checkpoint through index Trimmed are gone.
type Gap struct {
	Shard      int    `json:"shard"`
	Checkpoint uint64 `json:"checkpoint"`
	Trimmed    uint64 `json:"trimmed"`
}

func (g Gap) String() string {
	return fmt.Sprintf("shard %d: the changes after index %d through %d were trimmed", g.Shard, g.Checkpoint, g.Trimmed)
}

// ExpiredMessage describes the gaps of a trigger's checkpoints and what to
// do about them.
func ExpiredMessage(gaps []Gap) string {
	parts := make([]string, len(gaps))
	for i, g := range gaps {
		parts[i] = g.String()
	}
	return "checkpoint expired: " + strings.Join(parts, "; ") + "; resume with from=now or from=beginning"
}

// Pause pauses a trigger for every node: its runners stop delivering
// within a poll interval, and its checkpoints hold the feed back for
// PausedRetention at most. Pausing a paused trigger changes nothing.
func (t *Triggers) Pause(ctx context.Context, name string) (*Trigger, error) {
	d, err := t.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if d.Paused() {
		return d, nil
	}
	if err := t.setPaused(ctx, d, "paused by request"); err != nil {
		return nil, fmt.Errorf("changefeed: pause trigger %q: %w", name, err)
	}
	t.log.Info("trigger paused", "trigger", name, "reason", "paused by request")
	return t.Get(ctx, name)
}

// pauseFor pauses trigger d, which a runner found it cannot go on with,
// and returns errPaused (or why it could not pause it).
func (t *Triggers) pauseFor(ctx context.Context, d *Trigger, reason string) error {
	if err := t.setPaused(ctx, d, reason); err != nil {
		return fmt.Errorf("changefeed: pause trigger %q: %w", d.Name, err)
	}
	t.log.Warn("trigger paused", "trigger", d.Name, "reason", reason)
	return errPaused
}

// setPaused writes d's pause record, unless d is paused already (the
// first reason stays). A pause record of an earlier definition of the
// name is replaced.
func (t *Triggers) setPaused(ctx context.Context, d *Trigger, reason string) error {
	key := statePrefix + d.Name
	b, err := msgpack.Marshal(&pauseRec{Trigger: d.Version, SinceMS: time.Now().UnixMilli(), Reason: reason})
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		res, err := t.cfg.Node.GetIn(ctx, shard.SystemSpace, key, shard.ReadOptions{Consistency: shard.Linearizable})
		if err != nil {
			return err
		}
		op := shard.Op{Space: shard.SystemSpace, Key: key, Value: b}
		if res.Found {
			var r pauseRec
			if msgpack.Unmarshal(res.Record.Value, &r) == nil && r.Trigger == d.Version {
				return nil
			}
			v := res.Record.Version
			op.Cond.IfMatch = &v
		} else {
			op.Cond.IfNoneMatch = true
		}
		_, err = t.cfg.Node.Batch(ctx, []shard.Op{op, genOp()}, nil)
		if errors.Is(err, shard.ErrPrecondition) && attempt < 3 {
			continue // paused or resumed meanwhile: look again
		}
		if err != nil {
			return err
		}
		t.reconcileSoon()
		return nil
	}
}

// reconcileSoon has this node's reconcile loop run now rather than at
// its next tick.
func (t *Triggers) reconcileSoon() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Resume resumes a paused trigger, each shard from where from says
// (ResumeCheckpoint, ResumeNow or ResumeBeginning; "" is
// ResumeCheckpoint), with its dead streak back at zero. Resuming a
// running trigger from its checkpoints changes nothing; moving the
// checkpoints of a running one fails with ErrNotPaused. When the feed was
// trimmed past a checkpoint, resuming from the checkpoints fails with
// ErrExpired naming the gaps, and the trigger stays paused: never a
// silent gap.
func (t *Triggers) Resume(ctx context.Context, name, from string) (*Trigger, error) {
	switch from {
	case "":
		from = ResumeCheckpoint
	case ResumeCheckpoint, ResumeNow, ResumeBeginning:
	default:
		return nil, fmt.Errorf("%w: resume from %q (want %s, %s or %s)", ErrInvalidTrigger, from, ResumeCheckpoint, ResumeNow, ResumeBeginning)
	}
	d, err := t.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if !d.Paused() {
		if from == ResumeCheckpoint {
			return d, nil
		}
		return nil, fmt.Errorf("%w: %q is running; pause it before resuming it from %s", ErrNotPaused, name, from)
	}
	n := t.cfg.Node.Shards()
	if from == ResumeCheckpoint {
		// Check every shard before changing any.
		var gaps []Gap
		for s := 0; s < n; s++ {
			_, _, gap, err := t.resumePosition(ctx, d, s, from)
			if err != nil {
				return nil, fmt.Errorf("changefeed: resume trigger %q: %w", name, err)
			}
			if gap != nil {
				gaps = append(gaps, *gap)
			}
		}
		if len(gaps) > 0 {
			return nil, fmt.Errorf("%w: trigger %q: %s", ErrExpired, name, ExpiredMessage(gaps))
		}
	}
	for s := 0; s < n; s++ {
		if err := t.resumeShard(ctx, d, s, from); err != nil {
			return nil, fmt.Errorf("changefeed: resume trigger %q: %w", name, err)
		}
	}
	v := d.stateVersion
	_, err = t.cfg.Node.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: statePrefix + name, Delete: true, Cond: shard.Cond{IfMatch: &v}}, genOp()}, nil)
	if errors.Is(err, shard.ErrPrecondition) {
		return nil, fmt.Errorf("%w: trigger %q was paused, resumed or redefined during the resume: %v", ErrConflict, name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("changefeed: resume trigger %q: %w", name, err)
	}
	t.log.Info("trigger resumed", "trigger", name, "from", from)
	t.reconcileSoon()
	// The definition as resumed (its handler may fail again, and pause it
	// again, before a read could see it running).
	d.State, d.PausedSince, d.PausedReason, d.stateVersion = StateRunning, nil, "", 0
	return d, nil
}

// resumePosition returns shard s's checkpoint and the position a resume
// from from gives it, or the gap when from is ResumeCheckpoint and the
// feed was trimmed past the checkpoint.
func (t *Triggers) resumePosition(ctx context.Context, d *Trigger, s int, from string) (checkpointState, uint64, *Gap, error) {
	cp, err := t.checkpoint(ctx, d, s, shard.Linearizable)
	if err != nil {
		return cp, 0, nil, err
	}
	trimmed, applied, err := t.feedBounds(ctx, s, shard.Linearizable)
	if err != nil {
		return cp, 0, nil, err
	}
	switch from {
	case ResumeNow:
		return cp, max(cp.pos, applied), nil, nil
	case ResumeBeginning:
		return cp, max(cp.pos, trimmed), nil, nil
	}
	if cp.pos < trimmed {
		return cp, cp.pos, &Gap{Shard: s, Checkpoint: cp.pos, Trimmed: trimmed}, nil
	}
	return cp, cp.pos, nil, nil
}

// resumeShard moves shard s's checkpoint where a resume from from puts
// it and sets its dead streak to zero. A runner that has not yet seen the
// pause may move the checkpoint meanwhile: then it reads it again.
func (t *Triggers) resumeShard(ctx context.Context, d *Trigger, s int, from string) error {
	for attempt := 0; ; attempt++ {
		cp, pos, gap, err := t.resumePosition(ctx, d, s, from)
		if err != nil {
			return err
		}
		if gap != nil {
			// Trimmed since the check: resuming would skip it.
			return fmt.Errorf("%w: %s", ErrExpired, ExpiredMessage([]Gap{*gap}))
		}
		if pos == cp.pos && cp.streak == 0 {
			return nil
		}
		_, err = t.cfg.Node.Batch(ctx, []shard.Op{t.checkpointOp(d, s, pos, cp.version, cp.cnt, 0)}, nil)
		if errors.Is(err, shard.ErrPrecondition) && attempt < 5 {
			continue
		}
		return err
	}
}

// feedBounds returns shard s's trim point (positions below it are gone)
// and the applied index of the replica read.
func (t *Triggers) feedBounds(ctx context.Context, s int, c shard.Consistency) (trimmed, applied uint64, err error) {
	p, err := t.cfg.Node.ReadFeed(ctx, s, ^uint64(0)-1, 1, shard.ReadOptions{Consistency: c})
	if err != nil {
		return 0, 0, err
	}
	return p.Trimmed, p.Applied, nil
}

// ExpiredCheckpoints returns the shards whose feed was trimmed past the
// trigger's checkpoint, reading checkpoints and trim points at
// consistency c.
func (t *Triggers) ExpiredCheckpoints(ctx context.Context, d *Trigger, c shard.Consistency) ([]Gap, error) {
	var gaps []Gap
	for s := 0; s < t.cfg.Node.Shards(); s++ {
		cp, err := t.checkpoint(ctx, d, s, c)
		if err != nil {
			return nil, fmt.Errorf("changefeed: checkpoint of trigger %q on shard %d: %w", d.Name, s, err)
		}
		trimmed, _, err := t.feedBounds(ctx, s, c)
		if err != nil {
			return nil, fmt.Errorf("changefeed: feed of shard %d: %w", s, err)
		}
		if cp.pos < trimmed {
			gaps = append(gaps, Gap{Shard: s, Checkpoint: cp.pos, Trimmed: trimmed})
		}
	}
	return gaps, nil
}
