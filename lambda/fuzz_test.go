package lambda

import (
	"context"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
	"lambdadb/shard"
)

// nopStore answers every call with nothing found.
type nopStore struct{}

func (nopStore) GetIn(context.Context, shard.Space, string, shard.ReadOptions) (shard.GetResult, error) {
	return shard.GetResult{}, nil
}
func (nopStore) ScanIn(context.Context, shard.Space, shard.ScanRequest, shard.ReadOptions) (shard.ScanResult, error) {
	return shard.ScanResult{}, nil
}
func (nopStore) Put(context.Context, string, []byte, shard.Cond, session.Token) (shard.WriteResult, error) {
	return shard.WriteResult{Version: 1}, nil
}
func (nopStore) Delete(context.Context, string, shard.Cond, session.Token) (shard.WriteResult, error) {
	return shard.WriteResult{}, nil
}
func (nopStore) Batch(context.Context, []shard.Op, session.Token) (shard.BatchResult, error) {
	return shard.BatchResult{}, nil
}

// FuzzHostCall feeds arbitrary guest messages to the host API: every
// answer must be a msgpack array starting with an error code and message,
// and nothing may panic.
func FuzzHostCall(f *testing.F) {
	for _, v := range [][]any{{"k"}, {"k", []byte("v")}, {"k", []byte("v"), uint64(3)}, {"p/", ""}, {}} {
		b, _ := msgpack.Marshal(v)
		for op := uint32(0); op <= 6; op++ {
			f.Add(op, b)
		}
	}
	f.Add(uint32(opGet), []byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	e := &Engine{cfg: Config{Store: nopStore{}}}
	f.Fuzz(func(t *testing.T, op uint32, req []byte) {
		cs := &callState{e: e, fn: &Function{Name: "f"}, ro: shard.Stale}
		out := e.hostCall(context.Background(), cs, op, req)
		var resp []any
		if err := msgpack.Unmarshal(out, &resp); err != nil || len(resp) < 2 {
			t.Fatalf("host answered %x (%v)", out, err)
		}
		if _, ok := resp[0].(string); !ok {
			t.Fatalf("first element %T, want the error code", resp[0])
		}
	})
}

// FuzzPausedIn decodes peers' placement hints.
func FuzzPausedIn(f *testing.F) {
	b, _ := msgpack.Marshal(map[string]int{"echo": 2})
	f.Add(b, "echo")
	f.Add([]byte{0x81, 0xa1, 'x', 0xff}, "x")
	f.Fuzz(func(t *testing.T, info []byte, name string) {
		PausedIn(info, name)
	})
}
