package chaos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ms builds timestamps in milliseconds for readability.
const ms = int64(1e6)

func put(c int, key, val string, ver uint64, call, ret int64) Op {
	return Op{Client: c, Kind: Put, Key: key, Node: "n1", Value: val, Version: ver, Call: call * ms, Return: ret * ms}
}

func get(c int, key, val string, ver uint64, call, ret int64) Op {
	return Op{Client: c, Kind: Get, Key: key, Node: "n2", Found: val != "", Got: val, Version: ver, Call: call * ms, Return: ret * ms}
}

func final(op Op) Op { op.Final = true; return op }

func unknown(op Op) Op {
	op.Outcome = Unknown
	op.Version = 0
	op.Found = false
	op.Got = ""
	return op
}

func TestCheckLinearizable(t *testing.T) {
	cases := map[string][]Op{
		"sequential": {
			put(0, "k", "a", 5, 0, 10),
			get(1, "k", "a", 5, 11, 12),
			put(0, "k", "b", 9, 13, 20),
			get(1, "k", "b", 9, 21, 22),
			{Client: 0, Kind: CAS, Key: "k", Expect: 9, Value: "c", Version: 12, Call: 23 * ms, Return: 30 * ms},
			{Client: 1, Kind: CAS, Key: "k", Expect: 9, Value: "d", Rejected: true, Call: 31 * ms, Return: 32 * ms},
			{Client: 1, Kind: Delete, Key: "k", Deleted: true, Call: 33 * ms, Return: 34 * ms},
			{Client: 1, Kind: Delete, Key: "k", Deleted: false, Call: 35 * ms, Return: 36 * ms},
			{Client: 0, Kind: Create, Key: "k", Value: "e", Version: 20, Call: 37 * ms, Return: 40 * ms},
			final(get(2, "k", "e", 20, 50, 51)),
		},
		"concurrent read may see either": {
			put(0, "k", "a", 5, 0, 10),
			put(0, "k", "b", 9, 11, 20),
			get(1, "k", "a", 5, 12, 13), // b not yet applied
			get(2, "k", "b", 9, 14, 15), // b applied
			final(get(3, "k", "b", 9, 30, 31)),
		},
		"unknown write seen later": {
			put(0, "k", "a", 5, 0, 10),
			unknown(put(1, "k", "b", 0, 11, 15)),
			get(2, "k", "a", 5, 16, 17),
			get(2, "k", "b", 8, 18, 19), // b took effect after its client gave up
			final(get(3, "k", "b", 8, 30, 31)),
		},
		"unknown write never applied": {
			put(0, "k", "a", 5, 0, 10),
			unknown(put(1, "k", "b", 0, 11, 15)),
			final(get(3, "k", "a", 5, 30, 31)),
		},
	}
	for name, ops := range cases {
		t.Run(name, func(t *testing.T) {
			r := Check(ops, CheckOptions{})
			if !r.Linearizable() || r.Lost != 0 {
				t.Fatalf("got %+v, want linearizable with nothing lost", r)
			}
		})
	}
}

func TestCheckNotLinearizable(t *testing.T) {
	cases := map[string][]Op{
		"stale read": {
			put(0, "k", "a", 5, 0, 10),
			put(0, "k", "b", 9, 11, 20),
			get(1, "k", "a", 5, 21, 22), // b was acknowledged before the read began
		},
		"read goes back": {
			put(0, "k", "a", 5, 0, 10),
			unknown(put(1, "k", "b", 0, 0, 10)),
			get(2, "k", "b", 9, 11, 12),
			get(2, "k", "a", 5, 13, 14),
		},
		"cas succeeded on a stale version": {
			put(0, "k", "a", 5, 0, 10),
			put(0, "k", "b", 9, 11, 20),
			{Client: 1, Kind: CAS, Key: "k", Expect: 5, Value: "c", Version: 12, Call: 21 * ms, Return: 22 * ms},
		},
		"versions go backwards": {
			put(0, "k", "a", 9, 0, 10),
			put(0, "k", "b", 5, 11, 20),
		},
		"delete reported nothing to delete": {
			put(0, "k", "a", 5, 0, 10),
			{Client: 1, Kind: Delete, Key: "k", Deleted: false, Call: 11 * ms, Return: 12 * ms},
		},
	}
	for name, ops := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			r := Check(ops, CheckOptions{OutDir: dir})
			if r.Linearizable() || len(r.Illegal) != 1 {
				t.Fatalf("got %+v, want key k illegal", r)
			}
			if len(r.Visualizations) != 1 {
				t.Fatalf("no visualization written: %+v", r)
			}
			b, err := os.ReadFile(r.Visualizations[0])
			if err != nil || !strings.Contains(string(b), "<html") {
				t.Fatalf("visualization %s: %v", filepath.Base(r.Visualizations[0]), err)
			}
		})
	}
}

func TestCheckConflict(t *testing.T) {
	// One write observed at two versions: applied twice.
	ops := []Op{
		put(0, "k", "a", 5, 0, 10),
		get(1, "k", "a", 7, 11, 12),
	}
	r := Check(ops, CheckOptions{})
	if r.Linearizable() || len(r.Conflicts) != 1 {
		t.Fatalf("got %+v, want a conflict", r)
	}
}

func TestCheckLost(t *testing.T) {
	cases := map[string][]Op{
		"acknowledged write missing": {
			put(0, "k", "a", 5, 0, 10),
			put(0, "k", "b", 9, 11, 20),
			final(get(1, "k", "a", 5, 30, 31)),
		},
		"acknowledged write vanished": {
			put(0, "k", "a", 5, 0, 10),
			final(get(1, "k", "", 0, 30, 31)),
		},
		"acknowledged delete undone": {
			put(0, "k", "a", 5, 0, 10),
			{Client: 1, Kind: Delete, Key: "k", Deleted: true, Call: 11 * ms, Return: 12 * ms},
			final(get(1, "k", "a", 5, 30, 31)),
		},
	}
	for name, ops := range cases {
		t.Run(name, func(t *testing.T) {
			r := Check(ops, CheckOptions{})
			if r.Lost == 0 || r.Linearizable() {
				t.Fatalf("got %+v, want lost > 0 and not linearizable", r)
			}
		})
	}
	// An unknown delete may explain an absent key.
	ok := []Op{
		put(0, "k", "a", 5, 0, 10),
		unknown(Op{Client: 1, Kind: Delete, Key: "k", Call: 1 * ms, Return: 12 * ms}),
		final(get(1, "k", "", 0, 30, 31)),
	}
	if r := Check(ok, CheckOptions{}); r.Lost != 0 || !r.Linearizable() {
		t.Fatalf("unknown delete: got %+v, want linearizable, nothing lost", r)
	}
}
