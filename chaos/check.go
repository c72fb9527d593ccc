package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
)

// CheckOptions configure Check.
type CheckOptions struct {
	// Timeout bounds the search for one key. Default 60s. A key whose
	// search times out is reported as unchecked, never as linearizable.
	Timeout time.Duration
	// OutDir, when set, receives porcupine's HTML visualization of the
	// first MaxVisualizations keys that are not linearizable.
	OutDir            string
	MaxVisualizations int // default 10
	// Annotations are drawn on every visualization (the faults).
	Annotations []porcupine.Annotation
	// Parallel is how many keys are checked at once. Default GOMAXPROCS.
	Parallel int
}

// CheckResult is the verdict on a register history.
type CheckResult struct {
	Keys     int      // keys checked
	Ops      int      // operations in the check (failed reads and never-sent writes excluded)
	Illegal  []string // keys whose history is not linearizable
	TimedOut []string // keys whose search timed out
	// Conflicts lists keys where one value was seen with two versions or
	// one version with two values: a write applied twice, or a read that
	// invented a version.
	Conflicts []string
	// Lost counts acknowledged writes that the final reads contradict: the
	// final value is older than the write (or absent with no delete that
	// could follow it), or an acknowledged delete was undone by a write
	// acknowledged before it began.
	Lost        int
	LostDetails []string
	// Visualizations are the HTML files written for illegal keys.
	Visualizations []string
}

// Linearizable reports whether every key was checked and found
// linearizable, with no conflicting observations.
func (r CheckResult) Linearizable() bool {
	return len(r.Illegal) == 0 && len(r.TimedOut) == 0 && len(r.Conflicts) == 0
}

// Check checks a register history per key: linearizability with porcupine
// (a write of Unknown outcome may take effect at any time after its call),
// conflicting observations, and lost acknowledged writes against the final
// reads (ops with Final set).
func Check(ops []Op, opt CheckOptions) CheckResult {
	if opt.Timeout <= 0 {
		opt.Timeout = 60 * time.Second
	}
	if opt.MaxVisualizations <= 0 {
		opt.MaxVisualizations = 10
	}
	var drawn atomic.Int32
	if opt.Parallel <= 0 {
		opt.Parallel = runtime.GOMAXPROCS(0)
	}
	byKey := map[string][]Op{}
	var end int64
	for _, op := range ops {
		if op.Outcome == Fail || (op.Kind.reads() && op.Outcome != OK) {
			continue // no effect, and nothing observed
		}
		byKey[op.Key] = append(byKey[op.Key], op)
		end = max(end, op.Return, op.Call)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	var res CheckResult
	res.Keys = len(keys)
	var mu sync.Mutex
	work := make(chan string)
	var wg sync.WaitGroup
	for i := 0; i < opt.Parallel; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				kr := checkKey(k, byKey[k], end+1, opt, &drawn)
				mu.Lock()
				res.Ops += kr.ops
				if kr.conflict != "" {
					res.Conflicts = append(res.Conflicts, kr.conflict)
				}
				switch kr.verdict {
				case porcupine.Illegal:
					res.Illegal = append(res.Illegal, k)
				case porcupine.Unknown:
					res.TimedOut = append(res.TimedOut, k)
				}
				if kr.html != "" {
					res.Visualizations = append(res.Visualizations, kr.html)
				}
				res.Lost += len(kr.lost)
				res.LostDetails = append(res.LostDetails, kr.lost...)
				mu.Unlock()
			}
		}()
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	sort.Strings(res.Illegal)
	sort.Strings(res.TimedOut)
	sort.Strings(res.Conflicts)
	sort.Strings(res.LostDetails)
	sort.Strings(res.Visualizations)
	return res
}

type keyResult struct {
	ops      int
	verdict  porcupine.CheckResult
	conflict string
	lost     []string
	html     string
}

func checkKey(key string, ops []Op, never int64, opt CheckOptions, drawn *atomic.Int32) keyResult {
	var kr keyResult
	// Versions of values, from acknowledgements and reads.
	verOf := map[string]uint64{}
	valOf := map[uint64]string{}
	var conflicts []string
	see := func(val string, ver uint64, op Op) {
		if ver == 0 {
			return
		}
		if v, ok := verOf[val]; ok && v != ver {
			conflicts = append(conflicts, fmt.Sprintf("%s: value %s seen at versions %d and %d (%s)", key, val, v, ver, op))
		}
		if v, ok := valOf[ver]; ok && v != val {
			conflicts = append(conflicts, fmt.Sprintf("%s: version %d seen with values %s and %s (%s)", key, ver, v, val, op))
		}
		verOf[val], valOf[ver] = ver, val
	}
	for _, op := range ops {
		switch {
		case op.Outcome != OK:
		case op.Kind.reads() && op.Found:
			see(op.Got, op.Version, op)
		case op.Kind.writes() && op.Kind != Delete && !op.Rejected:
			see(op.Value, op.Version, op)
		}
	}
	if len(conflicts) > 0 {
		kr.conflict = conflicts[0]
		if len(conflicts) > 1 {
			kr.conflict += fmt.Sprintf(" (and %d more)", len(conflicts)-1)
		}
	}

	hist := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		in := regInput{Kind: op.Kind, Value: op.Value, Expect: op.Expect}
		if op.Kind.writes() && op.Kind != Delete {
			in.Ver = verOf[op.Value]
		}
		out := regOutput{Unknown: op.Outcome == Unknown, Rejected: op.Rejected, Found: op.Found,
			Got: op.Got, Version: op.Version, Deleted: op.Deleted}
		ret := op.Return
		if op.Outcome == Unknown {
			ret = never
		}
		hist = append(hist, porcupine.Operation{Input: in, Output: out, Call: op.Call, Return: ret,
			Metadata: fmt.Sprintf("client %d via %s", op.Client, op.Node)})
	}
	assignLanes(hist)
	kr.ops = len(hist)
	kr.verdict = porcupine.CheckOperationsTimeout(registerModel, hist, opt.Timeout)
	if kr.verdict == porcupine.Illegal && opt.OutDir != "" && drawn.Add(1) <= int32(opt.MaxVisualizations) {
		_, info := porcupine.CheckOperationsVerbose(registerModel, hist, opt.Timeout)
		info.AddAnnotations(opt.Annotations)
		path := filepath.Join(opt.OutDir, "linearizability-"+safeName(key)+".html")
		if err := os.MkdirAll(opt.OutDir, 0o755); err == nil && porcupine.VisualizePath(registerModel, info, path) == nil {
			kr.html = path
		}
	}
	kr.lost = lostWrites(key, ops, verOf)
	return kr
}

// assignLanes gives each operation the lowest visualization lane free at
// its call (ClientId only draws the picture; the check ignores it).
func assignLanes(hist []porcupine.Operation) {
	idx := make([]int, len(hist))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return hist[idx[a]].Call < hist[idx[b]].Call })
	var busy []int64 // lane → return time of its last op
	for _, i := range idx {
		lane := -1
		for l, until := range busy {
			if until < hist[i].Call {
				lane = l
				break
			}
		}
		if lane < 0 {
			lane = len(busy)
			busy = append(busy, 0)
		}
		busy[lane] = hist[i].Return
		hist[i].ClientId = lane
	}
}

// lostWrites returns the acknowledged writes that the final reads
// contradict.
func lostWrites(key string, ops []Op, verOf map[string]uint64) []string {
	var finals, writes []Op
	for _, op := range ops {
		switch {
		case op.Final && op.Kind.reads() && op.Outcome == OK:
			finals = append(finals, op)
		case op.Kind.writes() && op.Outcome != Fail && !op.Rejected:
			writes = append(writes, op)
		}
	}
	writerOf := map[uint64]Op{}
	for _, w := range writes {
		if w.Kind != Delete && verOf[w.Value] != 0 {
			writerOf[verOf[w.Value]] = w
		}
	}
	lost := map[string]string{}
	for _, f := range finals {
		for _, w := range writes {
			if w.Outcome != OK {
				continue
			}
			if w.Kind == Delete {
				// An acknowledged delete undone by a write acknowledged
				// before the delete began.
				if !w.Deleted || !f.Found {
					continue
				}
				if u, ok := writerOf[f.Version]; ok && u.Outcome == OK && u.Return < w.Call {
					lost[w.String()] = fmt.Sprintf("%s: lost %s: final read via %s returned %s@%d, written before the delete", key, w, f.Node, f.Got, f.Version)
				}
				continue
			}
			switch {
			case f.Found && f.Version < w.Version:
				lost[w.String()] = fmt.Sprintf("%s: lost %s: final read via %s returned older %s@%d", key, w, f.Node, f.Got, f.Version)
			case !f.Found && !deleteMayFollow(writes, w):
				lost[w.String()] = fmt.Sprintf("%s: lost %s: final read via %s found the key absent and no delete could follow the write", key, w, f.Node)
			}
		}
	}
	out := make([]string, 0, len(lost))
	for _, d := range lost {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// deleteMayFollow reports whether some delete that may have removed the key
// can be ordered after w.
func deleteMayFollow(writes []Op, w Op) bool {
	for _, d := range writes {
		if d.Kind != Delete {
			continue
		}
		if d.Outcome == Unknown || (d.Deleted && d.Return >= w.Call) {
			return true
		}
	}
	return false
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, s)
}
