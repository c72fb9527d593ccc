package chaos

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Report is the outcome of a Run.
type Report struct {
	Config    Config
	Workload  time.Duration // workload and faults, including the last heal
	Elapsed   time.Duration // the whole run
	CheckTime time.Duration

	Faults []FaultRecord
	// Ops counts register operations by kind and outcome ("ok", "412",
	// "fail", "unknown"); final reads are counted as "final".
	Ops        map[Kind]map[string]int
	ErrClasses map[string]int // failed and unknown register operations by error class
	SessionOps map[string]int

	Check             CheckResult
	SessionViolations []string
	FinalReadErrors   []string
	Converged         bool
	Convergence       []string
	Errors            []string // harness problems (a fault that could not be healed, ...)
	// The trigger workload: acknowledged puts under tw/, and those whose
	// index entry (written by the trigger's handler) never appeared.
	TriggerSummary string
	TriggerAcked   int
	TriggerMissing []string
	// The query workload: answers that were not exactly right.
	QuerySummary string
	QueryWrong   []string
	// Membership is the verdict on the final membership and placement;
	// Moves the replica moves seen in flight during the run.
	Membership  MembershipResult
	Moves       []MoveRecord
	StatusFiles []string // every member's /v1/cluster when the membership check failed
	HistoryFile string   // written when the run failed
}

func (r *Report) count(ops []Op) {
	r.Ops = map[Kind]map[string]int{}
	r.ErrClasses = map[string]int{}
	for _, op := range ops {
		if op.ErrClass != "" {
			r.ErrClasses[op.ErrClass]++
		}
		m := r.Ops[op.Kind]
		if m == nil {
			m = map[string]int{}
			r.Ops[op.Kind] = m
		}
		switch {
		case op.Final:
			m["final"]++
		case op.Outcome == OK && op.Rejected:
			m["412"]++
		default:
			m[op.Outcome.String()]++
		}
	}
}

// OK reports whether the run found no violation: linearizable, nothing
// lost, session guarantees kept, every final read answered, and every
// node's data identical.
func (r *Report) OK() bool {
	return r.Check.Linearizable() && r.Check.Lost == 0 && len(r.SessionViolations) == 0 &&
		len(r.FinalReadErrors) == 0 && r.Converged && len(r.Errors) == 0 && len(r.TriggerMissing) == 0 &&
		len(r.QueryWrong) == 0 && r.Membership.Settled && len(r.Membership.Problems) == 0 && len(faultErrors(r.Faults)) == 0
}

// faultErrors lists the errors of the membership faults: a join, a
// decommission or a remove that did not happen is a failure (a refused
// decommission is not).
func faultErrors(recs []FaultRecord) []string {
	var out []string
	for _, f := range recs {
		if !membershipFaults[f.Kind] {
			continue
		}
		for _, e := range f.Errors {
			out = append(out, fmt.Sprintf("%.1fs %s: %s", float64(f.Start)/1e9, f.Desc, e))
		}
	}
	return out
}

// membershipSummary counts the membership faults and the moves, and how
// many other faults overlapped a move in flight.
func (r *Report) membershipSummary() string {
	n := map[string]int{}
	refused := 0
	other, during := 0, 0
	for _, f := range r.Faults {
		switch {
		case membershipFaults[f.Kind]:
			n[f.Kind]++
			if f.Refused {
				refused++
			}
		default:
			other++
			if overlapsMove(r.Moves, f.Start, f.End) {
				during++
			}
		}
	}
	done := 0
	for _, m := range r.Moves {
		if m.Done {
			done++
		}
	}
	return fmt.Sprintf("join %d, decommission %d (%d refused), remove %d; %d replica moves seen (%d finished); %d of %d other faults during a move",
		n[FaultJoin], n[FaultDecommission], refused, n[FaultRemove], len(r.Moves), done, during, other)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// Write prints the report.
func (r *Report) Write(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "== nemesis report\n")
	mode := "insecure (plain HTTP, no tokens)"
	if c.Secure {
		mode = "secure (TLS, cluster secret, admin token)"
	}
	fmt.Fprintf(w, "run:        %v of faults and load (%v in all, check %v); seed %d; 3 nodes at the start, %d at the end; %d shards; %s\n",
		r.Workload.Round(time.Second), r.Elapsed.Round(time.Second), r.CheckTime.Round(time.Millisecond), c.Seed, len(r.Membership.Members), c.Shards, mode)
	fmt.Fprintf(w, "workload:   %d register clients on %d keys, %d session clients, op timeout %v\n",
		c.Clients, c.Keys, c.Sessions, c.OpTimeout)
	fmt.Fprintf(w, "faults:     %d injected (%s)\n", len(r.Faults), strings.Join(countKinds(r.Faults), ", "))
	fmt.Fprintf(w, "membership: %s\n", r.membershipSummary())
	for _, f := range r.Faults {
		fmt.Fprintf(w, "  %7.1fs  %-6s  %s\n", float64(f.Start)/1e9, fmt.Sprintf("%.1fs", float64(f.End-f.Start)/1e9), f.Desc)
		for _, e := range f.Errors {
			fmt.Fprintf(w, "           ! %s\n", e)
		}
	}
	fmt.Fprintf(w, "operations: (ok: took effect or read; 412: precondition failed; fail: certainly not applied;\n")
	fmt.Fprintf(w, "             unknown: timeout/5xx/connection lost, may have applied; final: reads after healing)\n")
	total := 0
	for k := Get; k <= Scan; k++ {
		m := r.Ops[k]
		if len(m) == 0 {
			continue
		}
		var parts []string
		n := 0
		for _, o := range []string{"ok", "412", "fail", "unknown", "final"} {
			if m[o] > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", o, m[o]))
				n += m[o]
			}
		}
		total += n
		fmt.Fprintf(w, "  %-7s %7d  %s\n", k, n, strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "  %-7s %7d  (scan: one read per key of a scanned range)\n", "total", total)
	if len(r.ErrClasses) > 0 {
		var parts []string
		for k, v := range r.ErrClasses {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "  errors: %s\n", strings.Join(parts, ", "))
	}
	if len(r.SessionOps) > 0 {
		var parts []string
		for k, v := range r.SessionOps {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "  session: %s\n", strings.Join(parts, ", "))
	}

	ch := r.Check
	lin := yesNo(ch.Linearizable())
	if len(ch.Illegal) == 0 && len(ch.Conflicts) == 0 && len(ch.TimedOut) > 0 {
		lin = "unknown"
	}
	fmt.Fprintf(w, "linearizable: %s (%d keys, %d operations checked; %d illegal, %d timed out, %d conflicting)\n",
		lin, ch.Keys, ch.Ops, len(ch.Illegal), len(ch.TimedOut), len(ch.Conflicts))
	list(w, "illegal key", ch.Illegal)
	list(w, "timed out key", ch.TimedOut)
	list(w, "conflict", ch.Conflicts)
	list(w, "visualization", ch.Visualizations)
	fmt.Fprintf(w, "lost: %d\n", ch.Lost)
	if r.QuerySummary != "" {
		fmt.Fprintf(w, "query: %s; wrong answers: %d\n", r.QuerySummary, len(r.QueryWrong))
		for i, m := range r.QueryWrong {
			if i == 20 {
				fmt.Fprintf(w, "  ... %d more\n", len(r.QueryWrong)-20)
				break
			}
			fmt.Fprintf(w, "  wrong: %s\n", m)
		}
	}
	if r.TriggerSummary != "" {
		fmt.Fprintf(w, "trigger: %s; index entries missing: %d\n", r.TriggerSummary, len(r.TriggerMissing))
		for i, k := range r.TriggerMissing {
			if i == 20 {
				fmt.Fprintf(w, "  ... %d more\n", len(r.TriggerMissing)-20)
				break
			}
			fmt.Fprintf(w, "  missing idx/%s\n", k)
		}
	}
	list(w, "lost", ch.LostDetails)
	fmt.Fprintf(w, "session guarantees: %s (%d violations)\n", yesNo(len(r.SessionViolations) == 0), len(r.SessionViolations))
	list(w, "violation", r.SessionViolations)
	fmt.Fprintf(w, "final reads: %s\n", yesNo(len(r.FinalReadErrors) == 0))
	list(w, "error", r.FinalReadErrors)
	fmt.Fprintf(w, "converged: %s (%s)\n", yesNo(r.Converged), strings.Join(r.Convergence, "; "))
	m := r.Membership
	var reps []string
	for _, id := range m.Members {
		reps = append(reps, fmt.Sprintf("%s %d", id, m.Replicas[id]))
	}
	left := strings.Join(m.Left, ",")
	if left == "" {
		left = "none"
	}
	fmt.Fprintf(w, "membership settled: %s after %v; members %s (replicas: %s); left: %s; every shard %d replicas on members: %s\n",
		yesNo(m.Settled), m.SettleTime.Round(time.Second), strings.Join(m.Members, ","), strings.Join(reps, ", "), left,
		replicas, yesNo(len(m.Problems) == 0))
	list(w, "membership problem", m.Problems)
	list(w, "membership fault error", faultErrors(r.Faults))
	var open []string
	for _, mv := range r.Moves {
		if !mv.Done {
			open = append(open, mv.String())
		}
	}
	list(w, "move still in flight", open)
	list(w, "cluster status", r.StatusFiles)
	list(w, "harness error", r.Errors)
	if r.HistoryFile != "" {
		fmt.Fprintf(w, "history: %s\n", r.HistoryFile)
	}
	if r.OK() {
		fmt.Fprintf(w, "result: PASS\n")
	} else {
		fmt.Fprintf(w, "result: FAIL\n")
	}
}

func list(w io.Writer, what string, items []string) {
	const maxItems = 20
	for i, s := range items {
		if i == maxItems {
			fmt.Fprintf(w, "  ... and %d more\n", len(items)-maxItems)
			return
		}
		fmt.Fprintf(w, "  %s: %s\n", what, s)
	}
}
