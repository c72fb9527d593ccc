package scatter

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/shard"
)

// FuzzSubQuery feeds arbitrary bodies to the sub-query handler of a
// one-node executor (which has no internal RPC: nothing leaves the
// process). It must answer every body with a decodable response and never
// panic; a well-formed query must succeed.
func FuzzSubQuery(f *testing.F) {
	n, err := shard.Open(shard.Config{Dir: "/n1", FS: vfs.NewMem(), Shards: 4})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = n.Close() })
	x, err := New(Config{Cluster: n, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	h := x.InternalHandler()
	seed := func(req subReq) []byte {
		b, err := msgpack.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	all := make([]int, n.Shards())
	for i := range all {
		all[i] = i
	}
	good := seed(subReq{Query: wireQuery{Prefix: "p/", Aggregate: &Spec{Op: OpSum, Field: "a", GroupBy: "g"}, Consistency: 2},
		Plan: planNode{ID: n.ID(), Shards: all}, TimeoutMS: 5000})
	f.Add(good)
	f.Add(seed(subReq{Query: wireQuery{Function: "f"}, Plan: planNode{ID: n.ID(), Shards: []int{0}}}))
	f.Add(seed(subReq{Query: wireQuery{Aggregate: &Spec{Op: OpCount}}, Plan: planNode{ID: n.ID(), Shards: []int{0, 0}}}))
	f.Add(seed(subReq{Query: wireQuery{Aggregate: &Spec{Op: OpCount}}, Plan: planNode{ID: n.ID(), Children: []planNode{{ID: "elsewhere", Shards: []int{1}}}}}))
	f.Add(seed(subReq{Query: wireQuery{Aggregate: &Spec{Op: OpTopK, Field: "a", K: 3}, Session: "s1.x"}, Plan: planNode{ID: n.ID(), Shards: []int{-1}}}))
	f.Add([]byte{0xc1})
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, RPCPath, bytes.NewReader(body)))
		var resp subResp
		if err := msgpack.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("undecodable response %q: %v", rec.Body.Bytes(), err)
		}
		if bytes.Equal(body, good) && (resp.Code != "" || len(resp.Covered) != n.Shards()) {
			t.Fatalf("a good sub-query failed: %+v", resp)
		}
		if resp.Code == "" && resp.Part != nil {
			if _, err := decodePartial(resp.Part); err != nil {
				t.Fatalf("partial does not decode: %v", err)
			}
		}
	})
}

// FuzzDecodePartial: any bytes from the wire either fail to decode or
// give a partial that merges and encodes.
func FuzzDecodePartial(f *testing.F) {
	p := NewPartial()
	for _, v := range []string{`{"a":1,"g":"x"}`, `{"a":2,"g":1}`, `{"a":3}`} {
		p.Add(Spec{Op: OpTopK, Field: "a", K: 2, GroupBy: "g"}, []byte("k"+v), []byte(v))
	}
	b, _ := encodePartial(p)
	f.Add(b)
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := decodePartial(b)
		if err != nil {
			return
		}
		for _, s := range []Spec{{Op: OpTopK, Field: "a", K: 2}, {Op: OpAvg, Field: "a", GroupBy: "g"}} {
			r := NewPartial()
			r.Merge(s, q)
			r.Merge(s, q)
			if _, err := json.Marshal(r.Result(s)); err != nil {
				t.Fatalf("result does not encode: %v", err)
			}
			if _, err := encodePartial(r); err != nil {
				t.Fatal(err)
			}
		}
	})
}
