package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"lambdadb/client"
)

var triggerCommand = &command{
	name:    "trigger",
	short:   "run functions on inserts",
	summary: "Manage triggers: a function's OnChanges called with the changes under a prefix.",
	sub: []*command{triggerCreateCommand, triggerListCommand, triggerShowCommand, triggerDeadCommand, triggerReplayCommand, triggerDropCommand, triggerPauseCommand,
		triggerResumeCommand, triggerRmCommand},
}

var triggerCreateCommand = &command{
	name:  "trigger create",
	short: "create or replace a trigger",
	args:  "[--server URL] --function FN [--prefix P] [--events put,delete] [--batch-size 100] [--max-wait-ms 200] [--max-retries 5] [--pause-after N] [--start now|beginning] NAME",
	summary: "Create (or replace) trigger NAME: every committed change under --prefix reaches\n" +
		"FN's OnChanges, in order per key, at least once (exactly once when the handler\n" +
		"writes only to the changed key's shard).",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		var t client.Trigger
		fs.StringVar(&t.Function, "function", "", "the `function` to call")
		fs.StringVar(&t.Prefix, "prefix", "", "key `prefix` to watch")
		events := fs.String("events", "", "comma-separated `events`: put, delete (default both)")
		batchSize := fs.Int("batch-size", 100, "changes per call at most, `N`")
		maxWait := fs.Int("max-wait-ms", 200, "longest a change waits to fill a batch when no paused sandbox is ready, `ms` (0: deliver at once)")
		maxRetries := fs.Int("max-retries", 5, "retries before a failing change is dead-lettered, `N` (0: none)")
		pauseAfter := fs.Int("pause-after", 0, "pause the trigger once a shard has dead-lettered `N` changes in a row (0: never; default: the server's --trigger-pause-after)")
		fs.StringVar(&t.Start, "start", "", "start at `now` (default) or beginning")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want NAME")
			}
			if t.Function == "" {
				return usagef("--function is required")
			}
			if *events != "" {
				t.Events = strings.Split(*events, ",")
			}
			// Only what was given: the server applies its defaults to the rest.
			if isSet(fs, "batch-size") {
				t.BatchSize = batchSize
			}
			if isSet(fs, "max-wait-ms") {
				t.MaxWaitMS = maxWait
			}
			if isSet(fs, "max-retries") {
				t.MaxRetries = maxRetries
			}
			if isSet(fs, "pause-after") {
				t.PauseAfter = pauseAfter
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			got, err := cl.CreateTrigger(ctx, args[0], t)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "trigger %s version %d: %s on %q (%s), batches of %d, wait %d ms, %d retries, %s, from %s\n",
				args[0], got.Version, got.Function, got.Prefix, strings.Join(got.Events, ","), deref(got.BatchSize), deref(got.MaxWaitMS),
				deref(got.MaxRetries), pauseAfterText(got.PauseAfter), got.Start)
			return nil
		}
	},
}

var triggerListCommand = &command{
	name:    "trigger list",
	short:   "list triggers",
	args:    "[--server URL]",
	summary: "List triggers with their progress.",
	flags: withClient(func(ctx context.Context, c *cli, cl *client.Client) error {
		ts, err := cl.Triggers(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tFUNCTION\tPREFIX\tEVENTS\tSTATE\tDELIVERED\tCALLS\tRETRIES\tDEAD\tLAG")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%q\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", t.Name, t.Function, t.Prefix, strings.Join(t.Events, ","),
				t.State, t.Delivered, t.Invocations, t.Retries, t.DeadLetters, t.Lag)
		}
		return tw.Flush()
	}),
}

var triggerShowCommand = &command{
	name:    "trigger show",
	short:   "show a trigger's progress per shard",
	args:    "[--server URL] NAME",
	summary: "Show a trigger's checkpoint, lag and counters per shard.",
	flags: withName(func(ctx context.Context, c *cli, cl *client.Client, name string) error {
		t, err := cl.TriggerStatus(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s: %s on %q (%s), batches of %d, wait %d ms, %d retries, %s\n",
			t.Name, t.Function, t.Prefix, strings.Join(t.Events, ","), deref(t.BatchSize), deref(t.MaxWaitMS), deref(t.MaxRetries),
			pauseAfterText(t.PauseAfter))
		printState(c, t)
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SHARD\tNODE\tRUNNING\tCHECKPOINT\tLAG\tDELIVERED\tCALLS\tATOMIC\tRETRIES\tDEAD\tSTREAK\tLAST ERROR")
		for _, s := range t.Shards {
			fmt.Fprintf(tw, "%d\t%s\t%v\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", s.Shard, s.Node, s.Running, s.Checkpoint, s.Lag,
				s.Delivered, s.Invocations, s.Atomic, s.Retries, s.DeadLetters, s.DeadStreak, s.LastError)
		}
		return tw.Flush()
	}),
}

var triggerDeadCommand = &command{
	name:    "trigger dead",
	short:   "list a trigger's dead letters",
	args:    "[--server URL] NAME",
	summary: "List the changes a trigger gave up on, with the error.",
	flags: withName(func(ctx context.Context, c *cli, cl *client.Client, name string) error {
		dl, err := cl.DeadLetters(ctx, name)
		if err != nil {
			return err
		}
		for _, d := range dl {
			replays := ""
			if d.Replays > 0 {
				replays = fmt.Sprintf(" (%d replays failed)", d.Replays)
			}
			fmt.Fprintf(c.stdout, "%s %s %s %s@%d: %s%s\n", d.ID, d.Time.Format("2006-01-02 15:04:05"), d.Op, d.Key, d.Version, d.Error, replays)
		}
		return nil
	}),
}

var triggerReplayCommand = &command{
	name:  "trigger replay",
	short: "deliver a trigger's dead letters again",
	args:  "[--server URL] NAME ID | --all NAME",
	summary: "Deliver dead letter ID (as `trigger dead` lists it), or with --all every dead letter,\n" +
		"to the trigger's function now. A letter the handler takes is gone; one it fails on\n" +
		"again stays with the new error (the command then exits 1).",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		all := fs.Bool("all", false, "replay every dead letter of the trigger")
		return func(ctx context.Context, args []string) error {
			if (*all && len(args) != 1) || (!*all && len(args) != 2) {
				return usagef("want NAME ID, or --all NAME")
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			var res []client.ReplayResult
			if *all {
				out, err := cl.ReplayDeadLetters(ctx, args[0])
				if err != nil {
					return err
				}
				res = out.Replayed
			} else {
				r, err := cl.ReplayDeadLetter(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				res = []client.ReplayResult{r}
			}
			failed := 0
			for _, r := range res {
				if r.Delivered {
					fmt.Fprintf(c.stdout, "%s delivered\n", r.ID)
				} else {
					failed++
					fmt.Fprintf(c.stdout, "%s failed again: %s\n", r.ID, r.Error)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d dead letters failed again", failed, len(res))
			}
			return nil
		}
	},
}

var triggerDropCommand = &command{
	name:    "trigger drop",
	short:   "delete a dead letter",
	args:    "[--server URL] NAME ID",
	summary: "Delete dead letter ID of trigger NAME without delivering its change.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		return func(ctx context.Context, args []string) error {
			if len(args) != 2 {
				return usagef("want NAME ID")
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			if err := cl.DropDeadLetter(ctx, args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "%s dropped\n", args[1])
			return nil
		}
	},
}

var triggerPauseCommand = &command{
	name:    "trigger pause",
	short:   "pause a trigger",
	args:    "[--server URL] NAME",
	summary: "Pause a trigger on every node: it delivers nothing until resumed.",
	flags: withName(func(ctx context.Context, c *cli, cl *client.Client, name string) error {
		t, err := cl.PauseTrigger(ctx, name)
		if err != nil {
			return err
		}
		printState(c, t)
		return nil
	}),
}

var triggerResumeCommand = &command{
	name:  "trigger resume",
	short: "resume a paused trigger",
	args:  "[--server URL] [--from checkpoint|now|beginning] NAME",
	summary: "Resume a paused trigger. --from checkpoint (the default) goes on from its checkpoints,\n" +
		"and fails (cursor_expired, naming the trimmed changes) if the change feed was trimmed\n" +
		"past one while it was paused; then choose: --from now skips every change up to now,\n" +
		"--from beginning skips only what was trimmed.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		from := fs.String("from", client.ResumeFromCheckpoint, "where to go on from: `checkpoint`, now or beginning")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want NAME")
			}
			switch *from {
			case client.ResumeFromCheckpoint, client.ResumeFromNow, client.ResumeFromBeginning:
			default:
				return usagef("--from %q: want checkpoint, now or beginning", *from)
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			t, err := cl.ResumeTrigger(ctx, args[0], *from)
			if err != nil {
				return err
			}
			printState(c, t)
			return nil
		}
	},
}

// printState prints a trigger's state, and why it is paused.
func printState(c *cli, t client.Trigger) {
	switch {
	case t.State == "paused" && t.PausedSince != nil:
		fmt.Fprintf(c.stdout, "%s paused since %s: %s\n", t.Name, t.PausedSince.Format("2006-01-02 15:04:05"), t.PausedReason)
	case t.State != "":
		fmt.Fprintf(c.stdout, "%s %s\n", t.Name, t.State)
	}
	if t.CheckpointExpired != "" {
		fmt.Fprintf(c.stdout, "%s: %s\n", t.Name, t.CheckpointExpired)
	}
}

// pauseAfterText describes a trigger's pause_after.
func pauseAfterText(p *int) string {
	if p == nil || *p == 0 {
		return "never paused"
	}
	return fmt.Sprintf("paused after %d dead letters in a row", *p)
}

var triggerRmCommand = &command{
	name:    "trigger rm",
	short:   "delete a trigger",
	args:    "[--server URL] NAME",
	summary: "Delete a trigger; its runners stop within a second.",
	flags: withName(func(ctx context.Context, c *cli, cl *client.Client, name string) error {
		if err := cl.DeleteTrigger(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "deleted %s\n", name)
		return nil
	}),
}

// deref returns *p, or 0 for nil.
func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}
