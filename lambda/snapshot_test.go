package lambda_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"

	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
)

// mutatorInit is what mutator answers in a sandbox fresh from its init:
// counter 0, the init's pattern (i % 251 over 4 MiB), one map entry.
func mutatorInit() string {
	sum := 0
	for i := 0; i < 4<<20; i++ {
		sum += i % 251
	}
	return fmt.Sprintf("0 %d 1", sum)
}

// TestSnapshotIsolation: sandboxes of one function each start from the
// state the module's init left — a sandbox restored from the snapshot
// never sees the writes of the sandbox the snapshot was taken in, nor of
// any other — with snapshots on and off.
func TestSnapshotIsolation(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshots=%v", !off), func(t *testing.T) {
			v := newEnv(t, lambda.Config{DisableSnapshots: off})
			v.deploy(t, "m", wasmtest.Guest(t, "mutator"), lambda.DeployOptions{MaxInstances: 4, TimeoutMS: 60000})
			init := mutatorInit()
			call := func(body string) lambda.Result {
				t.Helper()
				res, err := v.invoke("m", body)
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			if res := call("x"); string(res.Body) != init || res.Start != lambda.StartRestart {
				t.Fatalf("first call: %q %q, want %q", res.Body, res.Start, init)
			}
			size, resident, ok := lambda.SnapshotBytes(v.e, "m")
			if ok == off {
				t.Fatalf("snapshot taken = %v with DisableSnapshots %v", ok, off)
			}
			if ok && (size < 4<<20 || resident <= 0 || resident > size) {
				t.Fatalf("snapshot of %d bytes, %d resident", size, resident)
			}
			// The warm sandbox keeps its own state.
			if res := call("x"); !strings.HasPrefix(string(res.Body), "1 ") || res.Start != lambda.StartWarm {
				t.Fatalf("warm call: %q %q", res.Body, res.Start)
			}
			// Three concurrent calls: the paused sandbox serves one, two new
			// sandboxes start from the init's state.
			var mu sync.Mutex
			var got []string
			var wg sync.WaitGroup
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := v.invoke("m", "sleep")
					mu.Lock()
					got = append(got, string(res.Body))
					if err != nil {
						got[len(got)-1] = err.Error()
					}
					mu.Unlock()
				}()
			}
			wg.Wait()
			sort.Strings(got)
			if got[0] != init || got[1] != init || !strings.HasPrefix(got[2], "2 ") {
				t.Fatalf("concurrent calls found %q, want two %q and one from the warm sandbox", got, init)
			}
			// Every sandbox is stopped: restarts start from the init's state
			// again, whatever the sandboxes wrote.
			lambda.StopPaused(v.e)
			for range 3 {
				if res := call("x"); string(res.Body) != init || res.Start != lambda.StartRestart {
					t.Fatalf("restart: %q %q, want %q", res.Body, res.Start, init)
				}
				lambda.StopPaused(v.e)
			}
			if res := call("x"); string(res.Body) != init {
				t.Fatalf("restart: %q", res.Body)
			}
			if res := call("x"); !strings.HasPrefix(string(res.Body), "1 ") || res.Start != lambda.StartWarm {
				t.Fatalf("warm call: %q %q", res.Body, res.Start)
			}
		})
	}
}

// TestSnapshotAccounting: a paused sandbox restored from a snapshot is
// accounted what it dirtied, the snapshot once; dropping the module
// returns the snapshot's bytes.
func TestSnapshotAccounting(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{MaxInstances: 20})
	if _, err := v.invoke("echo", "x"); err != nil {
		t.Fatal(err)
	}
	size, resident, ok := lambda.SnapshotBytes(v.e, "echo")
	if !ok {
		t.Fatal("no snapshot")
	}
	lambda.StopPaused(v.e)
	if got := v.e.LiveBytes(); got != resident {
		t.Fatalf("live bytes with no sandbox = %d, want the snapshot's %d", got, resident)
	}
	if _, err := v.invoke("echo", "x"); err != nil {
		t.Fatal(err)
	}
	per := v.e.LiveBytes() - resident
	t.Logf("snapshot %d KiB (%d KiB resident); a paused echo sandbox is accounted %d KiB", size>>10, resident>>10, per>>10)
	if per <= 0 || per >= size {
		t.Fatalf("paused sandbox accounted %d bytes; its memory is %d", per, size)
	}
	lambda.StopPaused(v.e)
	lambda.DropCompiled(v.e)
	if got := v.e.LiveBytes(); got != 0 {
		t.Fatalf("live bytes after dropping the module = %d", got)
	}
}

// TestSnapshotFallback: modules the rewrite does not understand start the
// ordinary way.
func TestSnapshotFallback(t *testing.T) {
	echo := wasmtest.Example(t, "echo")
	if _, ok := lambda.PrepareSnapshot(echo); !ok {
		t.Fatal("echo is not prepared")
	}
	// Without the go:buildid section the module is not known to be Go's.
	stripped := stripCustom(t, echo, "go:buildid")
	if _, ok := lambda.PrepareSnapshot(stripped); ok {
		t.Fatal("a module without go:buildid was prepared")
	}
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "e", stripped, lambda.DeployOptions{})
	for _, want := range []string{lambda.StartRestart, lambda.StartWarm} {
		if res, err := v.invoke("e", "hi"); err != nil || string(res.Body) != "hi" || res.Start != want {
			t.Fatalf("%q %q %v", res.Body, res.Start, err)
		}
	}
	if _, _, ok := lambda.SnapshotBytes(v.e, "e"); ok {
		t.Fatal("a snapshot of an unprepared module")
	}
}

// stripCustom returns wasm without its custom sections named name.
func stripCustom(t *testing.T, wasm []byte, name string) []byte {
	t.Helper()
	out := append([]byte(nil), wasm[:8]...)
	for i := 8; i < len(wasm); {
		id := wasm[i]
		n, k := uleb(wasm[i+1:])
		end := i + 1 + k + int(n)
		if id == 0 {
			l, k2 := uleb(wasm[i+1+k:])
			if string(wasm[i+1+k+k2:i+1+k+k2+int(l)]) == name {
				i = end
				continue
			}
		}
		out = append(out, wasm[i:end]...)
		i = end
	}
	if _, err := wazero.NewRuntime(context.Background()).CompileModule(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	return out
}

func uleb(b []byte) (uint64, int) {
	var v uint64
	for i, c := range b {
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1
		}
	}
	return 0, len(b)
}
