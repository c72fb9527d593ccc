package shard

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestAdmission: with every write slot taken, a client write waits
// AdmissionWait and fails with ErrOverloaded (which is also
// ErrUnavailable); a slot that frees while it waits admits it; reads have
// their own slots.
func TestAdmission(t *testing.T) {
	n, err := Open(Config{FS: vfs.NewMem(), Dir: "/d", Shards: 2, MaxInflightWrites: 2, MaxInflightReads: 1,
		AdmissionWait: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := AdmitAsClient(context.Background())
	if _, err := n.Put(ctx, "k", []byte("v"), Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	n.writeSlots <- struct{}{}
	n.writeSlots <- struct{}{}
	// The node's own writes (no client mark) are not limited.
	if _, err := n.Put(context.Background(), "own", []byte("v"), Cond{}, nil); err != nil {
		t.Fatalf("an unmarked write with every client slot taken: %v", err)
	}
	for name, write := range map[string]func() error{
		"put":    func() error { _, err := n.Put(ctx, "k", []byte("v2"), Cond{}, nil); return err },
		"delete": func() error { _, err := n.Delete(ctx, "k", Cond{}, nil); return err },
		"batch":  func() error { _, err := n.Batch(ctx, []Op{{Key: "k", Value: []byte("v3")}}, nil); return err },
	} {
		if err := write(); !errors.Is(err, ErrOverloaded) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s with every slot taken: %v", name, err)
		}
	}
	// Reads are admitted apart.
	if res, err := n.Get(ctx, "k", ReadOptions{}); err != nil || string(res.Record.Value) != "v" {
		t.Fatalf("get while writes are shed: %+v, %v", res, err)
	}
	// A slot freed while a write waits admits it.
	n.cfg.AdmissionWait = 5 * time.Second
	go func() {
		time.Sleep(20 * time.Millisecond)
		<-n.writeSlots
	}()
	if _, err := n.Put(ctx, "k", []byte("v4"), Cond{}, nil); err != nil {
		t.Fatalf("put admitted once a slot frees: %v", err)
	}
	// A read beyond its single slot is shed too.
	n.cfg.AdmissionWait = 10 * time.Millisecond
	n.readSlots <- struct{}{}
	if _, err := n.Get(ctx, "k", ReadOptions{}); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("get with its slot taken: %v", err)
	}
}
