package shard

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
)

// rpcRoutes are the internal RPC routes a fuzz input can address, with a
// fresh response value to decode the answer into.
var rpcRoutes = []struct {
	path string
	resp func() any
}{
	{rpcApply, func() any { return &applyResp{} }},
	{rpcReadIndex, func() any { return &readIndexResp{} }},
	{rpcGet, func() any { return &readResp{} }},
	{rpcScan, func() any { return &readResp{} }},
	{rpcFeed, func() any { return &feedResp{} }},
}

// FuzzInternalRPC sends arbitrary msgpack bodies to every internal RPC
// route of a live one-node Node (the decoders a peer, or anyone who can
// reach the port, feeds): the node must not panic, must answer every
// request with a msgpack body of the route's response type, and must keep
// serving.
func FuzzInternalRPC(f *testing.F) {
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	put, _ := encodeCommand(newCommand(opPut, "k", []byte("v"), Cond{}))
	tok := session.Token{1: 5}.Encode()
	f.Add(uint8(0), enc(applyReq{Shard: 0, Cmd: put}))
	f.Add(uint8(0), enc(applyReq{Shard: 3, Cmd: []byte{0xc1}}))
	f.Add(uint8(0), enc(applyReq{Shard: -1, Cmd: put}))
	batch, _ := encodeCommand(command{Op: opBatch, Ops: []command{
		newCommand(opPut, "k", []byte("v2"), Cond{}),
		{Op: opDelete, Key: "k", Space: uint8(SystemSpace)},
	}})
	f.Add(uint8(0), enc(applyReq{Shard: For("k", 4), Cmd: batch}))
	f.Add(uint8(4), enc(feedReq{Shard: 1, After: 0, Limit: 10}))
	f.Add(uint8(4), enc(feedReq{Shard: 99, After: 1 << 63, Limit: -5}))
	f.Add(uint8(1), enc(readIndexReq{Shard: 1}))
	f.Add(uint8(1), enc(readIndexReq{Shard: 1 << 20}))
	f.Add(uint8(2), enc(readReq{Shard: 0, Key: "k", Consistency: uint8(Linearizable)}))
	f.Add(uint8(2), enc(readReq{Shard: 2, Key: "k", Consistency: uint8(Session), Session: tok}))
	f.Add(uint8(2), enc(readReq{Key: "k", Consistency: 9}))
	f.Add(uint8(2), enc(readReq{Key: "k", Session: "s1.garbage"}))
	f.Add(uint8(2), enc(readReq{Shard: For("k", 4), Key: "k", Space: uint8(SystemSpace)}))
	f.Add(uint8(2), enc(readReq{Key: "k", Space: 7}))
	f.Add(uint8(3), enc(readReq{Shard: 1, Lo: []byte("a"), Limit: 10, Space: uint8(SystemSpace)}))
	f.Add(uint8(3), enc(readReq{Shard: 0, Limit: 10, Space: 200}))
	f.Add(uint8(3), enc(readReq{Shard: 0, Lo: []byte("a"), Hi: []byte("z"), Limit: 10}))
	f.Add(uint8(3), enc(readReq{Shard: 0, Lo: []byte("z"), Hi: []byte("a"), Limit: 10}))
	f.Add(uint8(3), enc(readReq{Shard: 1, Lo: []byte{}, Limit: -1, Consistency: uint8(Stale)}))
	f.Add(uint8(3), []byte{0x80})
	f.Add(uint8(1), []byte{})

	n, err := Open(Config{FS: vfs.NewMem(), Dir: "/fuzz", Shards: 4, RequestTimeout: 2 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	h := n.internalHandler()
	if _, err := n.Put(context.Background(), "k", []byte("v"), Cond{}, nil); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := rpcRoutes[int(route)%len(rpcRoutes)]
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		// A request that outlives its deadline by far is a hang: fail
		// loudly (the fuzzer does not notice a stuck worker by itself).
		hung := time.AfterFunc(20*time.Second, func() { panic(fmt.Sprintf("%s %x: no answer after 20s", rt.path, body)) })
		defer hung.Stop()
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, rt.path, bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
			t.Fatalf("%s: status %d", rt.path, w.Code)
		}
		resp := rt.resp()
		if err := msgpack.Unmarshal(w.Body.Bytes(), resp); err != nil {
			t.Fatalf("%s: response does not decode: %v", rt.path, err)
		}
		// The node still serves.
		if _, err := n.Get(ctx, "k", ReadOptions{Consistency: Linearizable}); err != nil {
			t.Fatalf("node stopped serving after %s %x: %v", rt.path, body, err)
		}
	})
}

// FuzzRPCResponse decodes arbitrary bytes as every internal RPC response a
// node reads from a peer (including the status reports of peer probes),
// and turns the error code into an error: no panic, and a decoded error
// code always maps to an error or to success consistently.
func FuzzRPCResponse(f *testing.F) {
	for _, v := range []any{
		applyResp{Index: 7, Version: 7},
		applyResp{Index: 9, Version: 9, DeletedOps: []bool{false, true}},
		applyResp{rpcError: rpcError{Code: codeNotLeader, Msg: "no", Leader: "127.0.0.1:1"}},
		readResp{Records: []Record{{Key: "k", Value: []byte("v"), Version: 3}}, Found: true, Applied: 9},
		readIndexResp{Index: 4},
		StatusReport{Node: "n2", Shards: []ShardReport{{ID: 1, Applied: 5, State: "leader", Leader: "a:1"}}},
		StatusReport{Node: "n3", Info: []byte("functions=3")},
	} {
		b, _ := msgpack.Marshal(v)
		f.Add(b)
	}
	f.Add([]byte{0xde, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{&applyResp{}, &readResp{}, &readIndexResp{}, &StatusReport{}} {
			if msgpack.Unmarshal(b, v) != nil {
				continue
			}
			var e rpcError
			switch r := v.(type) {
			case *applyResp:
				e = r.rpcError
			case *readResp:
				e = r.rpcError
			case *readIndexResp:
				e = r.rpcError
			}
			if err := e.err(); (err == nil) != (e.Code == codeOK) {
				t.Fatalf("code %q gave error %v", e.Code, err)
			}
		}
	})
}
