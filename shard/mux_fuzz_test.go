package shard

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzReadPreamble feeds arbitrary connection openings to the mux's
// preamble decoder: it must never panic, and whatever it accepts must be
// exactly the preamble writePreamble produces for the decoded shard and id.
func FuzzReadPreamble(f *testing.F) {
	for _, seed := range []struct {
		magic string
		shard int
		id    string
	}{{magicMulti, 0, "n1"}, {magicSnap, 65535, "node-with-a-long-id"}, {magicInternal, 0, "n3"}} {
		var b bytes.Buffer
		_ = writePreamble(&b, seed.magic, seed.shard, seed.id)
		f.Add(b.Bytes())
	}
	f.Add([]byte("LDM1\x00\x01\x00"))       // empty id
	f.Add([]byte("LDM1\x00\x01\x05n1"))     // id shorter than its length
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n")) // not a preamble at all
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		shard, peer, err := readPreamble(r)
		if err != nil {
			return
		}
		if shard < 0 || shard > 65535 || peer == "" || len(peer) > maxIDLen {
			t.Fatalf("readPreamble accepted shard %d, peer %q", shard, peer)
		}
		var again bytes.Buffer
		if err := writePreamble(&again, string(b[:4]), shard, peer); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Bytes(), b[:again.Len()]) {
			t.Fatalf("re-encoded preamble %q differs from input %q", again.Bytes(), b[:again.Len()])
		}
	})
}
