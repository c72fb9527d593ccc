package chaos

import (
	"fmt"
	"hash/fnv"

	"github.com/anishathalye/porcupine"
)

// The register model checks one key's history. Its state is the key's
// current value (values are unique per write, so the value names the write)
// with that write's version, and the highest version written so far:
// versions are Raft indexes, so in any legal order writes carry increasing
// versions.
//
// A write's version is known when the write was acknowledged or when some
// read returned its value; Check fills it in from every observation before
// the search. A write whose version nobody observed cannot be the target of
// a successful If-Match (the client took the expected version from an
// observation, and versions name writes one to one), so such a state fails
// every If-Match.

type regState struct {
	Present bool
	Value   string
	Ver     uint64 // 0: not observed
	Floor   uint64 // highest known version written so far
}

type regInput struct {
	Kind   Kind
	Value  string
	Expect uint64
	Ver    uint64 // version of the write's value, 0 if never observed
}

type regOutput struct {
	Unknown  bool // outcome unknown: took effect or not
	Rejected bool // 412
	Found    bool
	Got      string
	Version  uint64
	Deleted  bool
}

func (s regState) write(in regInput) (bool, regState) {
	if in.Kind == Delete {
		return true, regState{Floor: s.Floor}
	}
	if in.Ver != 0 && in.Ver <= s.Floor {
		return false, s // a write ordered after a newer version
	}
	return true, regState{Present: true, Value: in.Value, Ver: in.Ver, Floor: max(s.Floor, in.Ver)}
}

// cond reports whether in's precondition holds in s.
func (s regState) cond(in regInput) bool {
	switch in.Kind {
	case Create:
		return !s.Present
	case CAS, Delete:
		if in.Kind == Delete && in.Expect == 0 {
			return true
		}
		return s.Present && s.Ver != 0 && s.Ver == in.Expect
	}
	return true
}

func registerStep(state, input, output any) (bool, any) {
	s, in, out := state.(regState), input.(regInput), output.(regOutput)
	if in.Kind.reads() {
		if !out.Found {
			return !s.Present, s
		}
		ok := s.Present && s.Value == out.Got && (s.Ver == 0 || s.Ver == out.Version)
		return ok, s
	}
	holds := s.cond(in)
	switch {
	case out.Unknown:
		if !holds {
			return true, s // applied and rejected, or never applied
		}
		return s.write(in)
	case out.Rejected:
		return !holds, s
	case !holds:
		return false, s
	case in.Kind == Delete && in.Expect == 0 && out.Deleted != s.Present:
		return false, s
	}
	return s.write(in)
}

var registerModel = porcupine.Model{
	Init: func() any { return regState{} },
	Step: registerStep,
	Hash: func(state any) uint64 {
		s := state.(regState)
		h := fnv.New64a()
		fmt.Fprintf(h, "%v|%s|%d|%d", s.Present, s.Value, s.Ver, s.Floor)
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		var call string
		switch in.Kind {
		case Get:
			call = "get()"
		case Scan:
			call = "scan()"
		case Put:
			call = fmt.Sprintf("put(%s)", in.Value)
		case CAS:
			call = fmt.Sprintf("cas(@%d, %s)", in.Expect, in.Value)
		case Create:
			call = fmt.Sprintf("create(%s)", in.Value)
		case Delete:
			call = "delete()"
			if in.Expect > 0 {
				call = fmt.Sprintf("delete(@%d)", in.Expect)
			}
		}
		if in.Ver != 0 {
			call += fmt.Sprintf(" [v%d]", in.Ver)
		}
		var ret string
		switch {
		case out.Unknown:
			ret = "unknown"
		case out.Rejected:
			ret = "412"
		case in.Kind.reads() && !out.Found:
			ret = "absent"
		case in.Kind.reads():
			ret = fmt.Sprintf("%s@%d", out.Got, out.Version)
		case in.Kind == Delete:
			ret = fmt.Sprintf("deleted=%v", out.Deleted)
		default:
			ret = fmt.Sprintf("@%d", out.Version)
		}
		return call + " -> " + ret
	},
	DescribeState: func(state any) string {
		s := state.(regState)
		if !s.Present {
			return fmt.Sprintf("absent (floor %d)", s.Floor)
		}
		return fmt.Sprintf("%s@%d (floor %d)", s.Value, s.Ver, s.Floor)
	},
}
