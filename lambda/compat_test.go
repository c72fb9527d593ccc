package lambda_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/shard"
)

// recordBeforeCreatedAt is the registry record as written before
// created_at existed: seven elements.
type recordBeforeCreatedAt struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack     struct{} `msgpack:",as_array"`
	SHA256       string
	Size         int
	MemoryMB     int
	TimeoutMS    int
	MaxInstances int
	Entrypoints  []string
	DeployedAtMS int64
}

// TestRegistryRecordsOfEarlierVersions: functions deployed by an earlier
// version (records without created_at) still load and run — an appended
// field must not make stored records unreadable.
func TestRegistryRecordsOfEarlierVersions(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	ctx := context.Background()
	wasm := wasmtest.Example(t, "echo")
	sum := sha256.Sum256(wasm)
	sha := hex.EncodeToString(sum[:])
	rec, err := msgpack.Marshal(&recordBeforeCreatedAt{SHA256: sha, Size: len(wasm), MemoryMB: 64, TimeoutMS: 1000,
		MaxInstances: 10, Entrypoints: []string{"handle"}, DeployedAtMS: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.node.Batch(ctx, []shard.Op{
		{Space: shard.SystemSpace, Key: "{fn}f/old", Value: rec},
		{Space: shard.SystemSpace, Key: "{fn}m/" + sha + "/old", Value: wasm},
	}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := v.e.Get(ctx, "old")
	if err != nil {
		t.Fatalf("a record without created_at: %v", err)
	}
	if f.SHA256 != sha || f.MaxInstances != 10 || !f.CreatedAt.IsZero() || !f.Has("handle") {
		t.Fatalf("decoded %+v", f)
	}
	if res, err := v.invoke("old", "hi"); err != nil || string(res.Body) != "hi" {
		t.Fatalf("invoking it: %q, %v", res.Body, err)
	}
	// Redeploying keeps it without created_at (its meters are not reset).
	f2 := v.deploy(t, "old", wasm, lambda.DeployOptions{})
	if !f2.CreatedAt.IsZero() || f2.Version == f.Version {
		t.Fatalf("redeployed: %+v", f2)
	}
	if got := v.e.Stats(f2).Invocations; got != 1 {
		t.Fatalf("invocations across the redeploy: %d, want 1", got)
	}
}
