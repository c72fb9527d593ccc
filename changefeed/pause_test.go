package changefeed_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/changefeed"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/shard"
)

func intp(v int) *int { return &v }

// define deploys the faulty guest as "rec" (its OnChanges fails on a
// value of "poison") and defines a trigger on it under prefix, with no
// retries, one change per batch and the given pause_after.
func define(t *testing.T, v *tenv, name, prefix string, pauseAfter int) *changefeed.Trigger {
	t.Helper()
	ctx := context.Background()
	if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	d, err := v.trg.Define(ctx, changefeed.TriggerSpec{Name: name, Function: "rec", Prefix: prefix, BatchSize: intp(1),
		MaxWaitMS: intp(0), MaxRetries: intp(0), PauseAfter: intp(pauseAfter)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (v *tenv) trigger(t *testing.T, name string) *changefeed.Trigger {
	t.Helper()
	d, err := v.trg.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (v *tenv) deadLetters(t *testing.T, name string) int {
	t.Helper()
	dl, err := v.trg.DeadLetters(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return len(dl)
}

// TestTriggerPausesAfterDeadLetters: a trigger whose handler fails on
// every change is paused once a shard has dead-lettered pause_after
// changes in a row; the state says why and since when, the paused trigger
// delivers (and dead-letters) nothing, and a resume goes on from the
// checkpoint with the streak counted from zero again.
func TestTriggerPausesAfterDeadLetters(t *testing.T) {
	v := newTEnv(t, lambda.Config{})
	ctx := context.Background()
	define(t, v, "a", "{a}", 3)
	if d := v.trigger(t, "a"); d.State != changefeed.StateRunning || d.Paused() || d.PauseAfter != 3 {
		t.Fatalf("a new trigger: %+v", d)
	}
	began := time.Now()
	for i := 0; i < 8; i++ {
		v.put(t, fmt.Sprintf("{a}%d", i), "poison")
	}
	v.put(t, "{a}good", "fine")
	eventually(t, "the trigger is paused", func() bool { return v.trigger(t, "a").Paused() })
	d := v.trigger(t, "a")
	s := shard.For("{a}", v.node.Shards())
	want := fmt.Sprintf("paused after 3 consecutive dead letters on shard %d: ", s)
	if d.State != changefeed.StatePaused || !strings.HasPrefix(d.PausedReason, want) || !strings.Contains(d.PausedReason, "poison change at {a}2") {
		t.Fatalf("state %q, reason %q; want paused, %q… poison change at {a}2", d.State, d.PausedReason, want)
	}
	if d.PausedSince == nil || d.PausedSince.Before(began.Add(-time.Second)) || d.PausedSince.After(time.Now()) {
		t.Fatalf("paused since %v, the test began at %v", d.PausedSince, began)
	}
	// Paused: nothing more is delivered or dead-lettered.
	time.Sleep(400 * time.Millisecond)
	if n := v.deadLetters(t, "a"); n != 3 {
		t.Fatalf("%d dead letters, want 3 (the trigger went on after the pause?)", n)
	}
	if got := v.get(t, "log/{a}good"); got != "" {
		t.Fatalf("a paused trigger delivered: %q", got)
	}
	eventually(t, "the shard's status shows the pause", func() bool {
		for _, st := range v.trg.Status("a") {
			if st.Shard == s {
				return !st.Running && st.DeadStreak == 3 && st.DeadLetters == 3
			}
		}
		return false
	})
	if ls, err := v.trg.List(ctx, shard.ReadOptions{}); err != nil || len(ls) != 1 || ls[0].State != changefeed.StatePaused {
		t.Fatalf("list: %v, %v", ls, err)
	}
	// Pausing again keeps the first reason.
	if d2, err := v.trg.Pause(ctx, "a"); err != nil || d2.PausedReason != d.PausedReason {
		t.Fatalf("pause a paused trigger: %+v, %v", d2, err)
	}

	// Resumed from its checkpoint, the handler still fails: three more
	// dead letters, and paused again.
	r, err := v.trg.Resume(ctx, "a", "")
	if err != nil || r.Paused() {
		t.Fatalf("resume: %+v, %v", r, err)
	}
	eventually(t, "paused again", func() bool { return v.trigger(t, "a").Paused() && v.deadLetters(t, "a") == 6 })
	if d := v.trigger(t, "a"); !strings.Contains(d.PausedReason, "poison change at {a}5") {
		t.Fatalf("reason %q", d.PausedReason)
	}
	time.Sleep(200 * time.Millisecond)
	if n := v.deadLetters(t, "a"); n != 6 {
		t.Fatalf("%d dead letters after the second pause, want 6", n)
	}
}

// TestTriggerThatRecoversIsNotPaused: dead letters separated by
// successful deliveries never make a streak: the trigger keeps running
// with more dead letters in all than pause_after. The threshold still
// holds for a streak.
func TestTriggerThatRecoversIsNotPaused(t *testing.T) {
	v := newTEnv(t, lambda.Config{})
	define(t, v, "r", "{r}", 3)
	vals := []string{"poison", "poison", "ok", "poison", "poison", "ok", "poison", "poison", "ok"}
	for i, val := range vals {
		v.put(t, fmt.Sprintf("{r}%d", i), val)
	}
	eventually(t, "every change delivered or dead", func() bool {
		st := total(v, "r")
		return st.Delivered == 3 && st.DeadLetters == 6
	})
	time.Sleep(200 * time.Millisecond)
	if d := v.trigger(t, "r"); d.Paused() || d.State != changefeed.StateRunning {
		t.Fatalf("paused with no streak of 3: %q", d.PausedReason)
	}
	for _, st := range v.trg.Status("r") {
		if st.DeadStreak != 0 || !st.Running {
			t.Fatalf("shard %d: streak %d, running %v", st.Shard, st.DeadStreak, st.Running)
		}
	}
	for i := 0; i < 3; i++ {
		v.put(t, fmt.Sprintf("{r}late%d", i), "poison")
	}
	eventually(t, "three in a row pause it", func() bool { return v.trigger(t, "r").Paused() })
}

// TestPausedTriggerReleasesTheFeed: a paused trigger's checkpoint holds
// back the trimming of the feed for PausedRetention only; past it the
// feed is trimmed, and a resume from the checkpoint reports the trimmed
// changes (ErrExpired) and leaves the trigger paused instead of skipping
// them. Resumed from now, the trigger delivers what comes next.
func TestPausedTriggerReleasesTheFeed(t *testing.T) {
	const bound = 2 * time.Second
	v := newTEnvWith(t, lambda.Config{}, shard.Config{FeedRetainEntries: 5, FeedTrimInterval: 20 * time.Millisecond},
		changefeed.TriggersConfig{PausedRetention: bound})
	ctx := context.Background()
	d := define(t, v, "b", "{b}", 2)
	v.put(t, "{b}p1", "poison")
	v.put(t, "{b}p2", "poison")
	eventually(t, "the trigger is paused", func() bool { return v.trigger(t, "b").Paused() })
	since := *v.trigger(t, "b").PausedSince
	for i := 0; i < 20; i++ {
		v.put(t, fmt.Sprintf("{b}x%d", i), "fine")
	}
	time.Sleep(300 * time.Millisecond) // 15 trim intervals
	gaps, err := v.trg.ExpiredCheckpoints(ctx, d, shard.Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().Before(since.Add(bound - 10*time.Millisecond)) {
		if len(gaps) > 0 {
			t.Fatalf("trimmed past a trigger paused for less than its bound: %v", gaps)
		}
	} else {
		t.Logf("too slow to check the feed within the bound")
	}
	eventually(t, "the feed is trimmed past the checkpoint", func() bool {
		gaps, err = v.trg.ExpiredCheckpoints(ctx, d, shard.Linearizable)
		return err == nil && len(gaps) > 0
	})
	if time.Since(since) < bound {
		t.Fatalf("trimmed %v after the pause, before the bound (%v)", time.Since(since), bound)
	}
	s := shard.For("{b}", v.node.Shards())
	if len(gaps) != 1 || gaps[0].Shard != s || gaps[0].Trimmed <= gaps[0].Checkpoint {
		t.Fatalf("gaps %+v, want one on shard %d", gaps, s)
	}

	_, err = v.trg.Resume(ctx, "b", changefeed.ResumeCheckpoint)
	want := fmt.Sprintf("checkpoint expired: shard %d: the changes after index %d through", s, gaps[0].Checkpoint)
	if !errors.Is(err, changefeed.ErrExpired) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "from=now or from=beginning") {
		t.Fatalf("resume from the checkpoint: %v; want ErrExpired saying %q", err, want)
	}
	if !v.trigger(t, "b").Paused() {
		t.Fatal("a failed resume resumed the trigger")
	}

	r, err := v.trg.Resume(ctx, "b", changefeed.ResumeNow)
	if err != nil || r.Paused() || r.State != changefeed.StateRunning {
		t.Fatalf("resume from now: %+v, %v", r, err)
	}
	v.put(t, "{b}after", "later")
	eventually(t, "a later change is delivered", func() bool { return strings.Contains(v.get(t, "log/{b}after"), "later") })
	if got := v.get(t, "log/{b}x19"); got != "" {
		t.Fatalf("a change from before now was delivered: %q", got)
	}
	if _, err := v.trg.Resume(ctx, "b", changefeed.ResumeNow); !errors.Is(err, changefeed.ErrNotPaused) {
		t.Fatalf("moving a running trigger's checkpoints: %v", err)
	}
}

// TestTriggerPausesWhenItsCheckpointIsTrimmed: a runner that finds the
// feed trimmed past its checkpoint (here a node whose retention ignores
// triggers, while the function is missing) pauses the trigger with the
// gap as its reason instead of skipping it; resumed from beginning, it
// goes on from the oldest retained change.
func TestTriggerPausesWhenItsCheckpointIsTrimmed(t *testing.T) {
	var v *tenv
	var protect atomic.Bool // the triggers bound the trimming
	v = newTEnvWith(t, lambda.Config{}, shard.Config{FeedRetainEntries: 5, FeedTrimInterval: 20 * time.Millisecond,
		FeedTrimLimit: func(s int) uint64 {
			if protect.Load() {
				return v.trg.TrimLimit(s)
			}
			return ^uint64(0)
		}}, changefeed.TriggersConfig{})
	ctx := context.Background()
	define(t, v, "g", "{g}", 5)
	if _, err := v.fns.Remove(ctx, "rec", nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		v.put(t, fmt.Sprintf("{g}%d", i), "fine")
	}
	eventually(t, "the trigger is paused", func() bool { return v.trigger(t, "g").Paused() })
	s := shard.For("{g}", v.node.Shards())
	if d := v.trigger(t, "g"); !strings.HasPrefix(d.PausedReason, fmt.Sprintf("checkpoint expired: shard %d: the changes after index ", s)) {
		t.Fatalf("reason %q", d.PausedReason)
	}
	if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	protect.Store(true)
	if _, err := v.trg.Resume(ctx, "g", ""); !errors.Is(err, changefeed.ErrExpired) {
		t.Fatalf("resume from the checkpoint: %v", err)
	}
	if _, err := v.trg.Resume(ctx, "g", changefeed.ResumeBeginning); err != nil {
		t.Fatal(err)
	}
	v.put(t, "{g}late", "x")
	eventually(t, "a later change is delivered", func() bool {
		if v.trigger(t, "g").Paused() {
			// A trim computed before protect was set may commit after the
			// resume read the trim point: the runner then finds its
			// checkpoint trimmed and pauses again (never skipping), and
			// is resumed again, as an operator would.
			if _, err := v.trg.Resume(ctx, "g", changefeed.ResumeBeginning); err != nil && !errors.Is(err, changefeed.ErrConflict) {
				t.Fatal(err)
			}
		}
		return v.get(t, "log/{g}late") != ""
	})
	if got := v.get(t, "log/{g}0"); got != "" {
		t.Fatalf("a trimmed change was delivered: %q", got)
	}
}
