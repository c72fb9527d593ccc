package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"lambdadb/client"
)

var nodeCommand = &command{
	name:  "node",
	short: "list, decommission and remove nodes; watch replica moves",
	summary: "Manage the cluster's membership. A node joins with 'lambdadb serve --join'; the cluster\n" +
		"then moves replicas to it. Decommission a node to move its replicas off it, then\n" +
		"stop and remove it; remove a node that died for good to rebuild its replicas elsewhere.",
	sub: []*command{nodeListCommand, nodeDecommissionCommand, nodeRemoveCommand, nodeMovesCommand, nodeRebalanceCommand},
}

var nodeListCommand = &command{
	name:  "node list",
	short: "list the nodes and the replica moves in flight",
	args:  "[--server URL]",
	summary: "List the cluster's nodes (* marks the node that answered) with their membership state,\n" +
		"the replicas and leaders each holds and the moves each takes part in, then the\n" +
		"replica moves in flight.",
	flags: withClient(func(ctx context.Context, c *cli, cl *client.Client) error {
		st, err := cl.Cluster(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tNUMBER\tADDR\tUP\tSTATE\tREPLICAS\tLEADERS\tMOVES")
		for _, n := range st.Nodes {
			id := n.ID
			if id == st.Node {
				id += "*"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\n", id, n.Number, n.Addr, yesNo(n.Up), stateText(n.State),
				n.Replicas, n.Leaders, n.Moves)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout)
		if st.RebalancePaused {
			fmt.Fprintln(c.stdout, "rebalancing is paused: no new move starts (resume with 'lambdadb node rebalance --resume')")
		}
		return printMoves(c.stdout, st.Moves, time.Now())
	}),
}

// withNodeID is the flags function of a client command that takes
// exactly one node ID: it defines --server and runs run with a client.
func withNodeID(run func(ctx context.Context, c *cli, cl *client.Client, id string) error) func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
	return func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one node ID")
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			return run(ctx, c, cl, args[0])
		}
	}
}

var nodeDecommissionCommand = &command{
	name:  "node decommission",
	short: "move every replica off a node",
	args:  "[--server URL] ID",
	summary: "Start moving every replica off node ID to the other nodes. The node keeps serving\n" +
		"until it holds none, then becomes decommissioned and can be stopped and removed\n" +
		"('lambdadb node remove ID'). Refused (conflict) when the other nodes could not hold\n" +
		"every shard's replicas: add a node first. Follow it with 'lambdadb node moves --watch'.",
	flags: withNodeID(func(ctx context.Context, c *cli, cl *client.Client, id string) error {
		if err := cl.Decommission(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s decommissioning: its replicas are moving to other nodes (follow with 'lambdadb node moves --watch')\n", id)
		return nil
	}),
}

var nodeRemoveCommand = &command{
	name:  "node remove",
	short: "forget a dead or decommissioned node",
	args:  "[--server URL] ID",
	summary: "Remove node ID from the cluster: a node that is down for good, or decommissioned. The\n" +
		"replicas it held are rebuilt on the other nodes, and its data directory can never serve\n" +
		"again (a new node may take its name with an empty data directory and --join). Refused\n" +
		"(conflict) while the node is up and holds replicas: decommission it, or stop it first.",
	flags: withNodeID(func(ctx context.Context, c *cli, cl *client.Client, id string) error {
		if err := cl.RemoveNode(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s removed\n", id)
		return nil
	}),
}

// movesWatchInterval is how often "node moves --watch" asks again (a
// variable so tests can make it short).
var movesWatchInterval = time.Second

// movesQuietTime is how long "node moves --watch" must see the cluster
// settled (no move in flight, none planned, no node joining or
// decommissioning) before it ends. (A variable so tests can make it
// short.)
var movesQuietTime = time.Second

var nodeMovesCommand = &command{
	name:  "node moves",
	short: "show the replica moves in flight",
	args:  "[--server URL] [--watch]",
	summary: "Show the replica moves in flight: shard (\"meta\" for the metadata group), source → target\n" +
		"(\"-\" when a replica is only added), phase, progress (the target's applied log position /\n" +
		"the leader's), snapshot bytes sent, age, and what a stuck move waits for. With --watch,\n" +
		"print them again every second until the cluster has settled: no move in flight or\n" +
		"planned, no node joining or decommissioning.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		watch := fs.Bool("watch", false, "print the moves every second until the cluster stops moving replicas")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			if !*watch {
				moves, err := cl.Moves(ctx)
				if err != nil {
					return err
				}
				return printMoves(c.stdout, moves, time.Now())
			}
			err = c.watchMoves(ctx, cl)
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return err
		}
	},
}

// watchMoves prints the moves in flight every movesWatchInterval until
// none has been for movesQuietTime and no node is decommissioning (or
// rebalancing is paused, so none will start).
func (c *cli) watchMoves(ctx context.Context, cl *client.Client) error {
	quietSince := time.Now()
	printed := false
	for {
		moves, err := cl.Moves(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		if len(moves) > 0 {
			if printed {
				fmt.Fprintln(c.stdout)
			}
			if err := printMoves(c.stdout, moves, now); err != nil {
				return err
			}
			quietSince, printed = now, true
		} else {
			st, err := cl.Cluster(ctx)
			if err != nil {
				return err
			}
			var busy []string
			for _, n := range st.Nodes {
				if n.State == client.NodeDecommissioning || n.State == client.NodeJoining {
					busy = append(busy, n.ID+" "+n.State)
				}
			}
			switch {
			case st.RebalancePaused:
				fmt.Fprintln(c.stdout, "no replica moves in flight; rebalancing is paused (resume with 'lambdadb node rebalance --resume')")
				return nil
			case st.Settled && now.Sub(quietSince) >= movesQuietTime:
				if printed {
					fmt.Fprintln(c.stdout)
				}
				return printMoves(c.stdout, nil, now)
			case len(busy) > 0:
				if printed {
					fmt.Fprintln(c.stdout)
				}
				fmt.Fprintf(c.stdout, "no replica moves in flight yet; %s\n", strings.Join(busy, ", "))
				quietSince, printed = now, true
			case !st.Settled:
				quietSince = now // more moves are coming
			}
		}
		t := time.NewTimer(movesWatchInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

var nodeRebalanceCommand = &command{
	name:  "node rebalance",
	short: "plan replica moves now, or pause and resume planning",
	args:  "[--server URL] [--pause | --resume]",
	summary: "Have the cluster plan replica moves and preferred leaders now (resuming planning if it\n" +
		"was paused). --pause stops new moves cluster-wide (moves under way finish; decommissions\n" +
		"and rebuilds wait); --resume lets them start again.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		pause := fs.Bool("pause", false, "stop starting new moves")
		resume := fs.Bool("resume", false, "start new moves again")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			if *pause && *resume {
				return usagef("give --pause or --resume, not both")
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			var msg string
			switch {
			case *pause:
				err, msg = cl.PauseRebalance(ctx, true), "rebalancing paused: no new move starts; moves under way finish"
			case *resume:
				err, msg = cl.PauseRebalance(ctx, false), "rebalancing resumed"
			default:
				err, msg = cl.Rebalance(ctx), "rebalancing: the cluster plans its moves now"
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.stdout, msg)
			return err
		}
	},
}

// printMoves prints the moves in flight as a table, ages counted to now,
// or a line saying there are none.
func printMoves(w io.Writer, moves []client.MoveStatus, now time.Time) error {
	if len(moves) == 0 {
		_, err := fmt.Fprintln(w, "no replica moves in flight")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tMOVE\tPHASE\tPROGRESS\tSENT\tAGE")
	for _, mv := range moves {
		from := mv.From
		if from == "" {
			from = "-" // a replica added, none removed
		}
		progress := "-"
		if mv.Target > 0 {
			progress = fmt.Sprintf("%d/%d", mv.Applied, mv.Target)
		}
		age := "-"
		if !mv.Started.IsZero() {
			age = max(now.Sub(mv.Started), 0).Round(time.Second).String()
		}
		if mv.Waiting != "" {
			age += "  waiting: " + oneLine(mv.Waiting) // the last column: not aligned
		}
		fmt.Fprintf(tw, "%s\t%s → %s\t%s\t%s\t%s\t%s\n", mv.Shard, from, mv.To, mv.Phase, progress,
			formatBytes(mv.BytesSent), age)
	}
	return tw.Flush()
}

// formatBytes formats n with a binary unit: "512 B", "1.5 KiB", "12.0 MiB".
func formatBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// oneLine replaces the line breaks and tabs of s with spaces, so a
// server's message cannot break a table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// yesNo is "yes" or "no".
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// stateText is a node's membership state, "-" when the server gave none.
func stateText(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
