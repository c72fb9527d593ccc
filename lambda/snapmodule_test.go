package lambda

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"
)

// tinyGoLike is a minimal module shaped like a Go one: a go:buildid
// section, a memory, mutable and immutable globals, an export and data.
func tinyGoLike() []byte {
	sec := func(id byte, body ...byte) []byte {
		return append(append([]byte{id}, appendU32(nil, uint32(len(body)))...), body...)
	}
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = append(b, sec(0, append([]byte{10}, "go:buildid"...)...)...)
	b = append(b, sec(5, 1, 0, 1)...)                                                                      // memory: 1 page
	b = append(b, sec(6, 3, 0x7F, 1, 0x41, 5, 0x0B, 0x7E, 1, 0x42, 0x7F, 0x0B, 0x7F, 0, 0x41, 0, 0x0B)...) // globals
	b = append(b, sec(7, 1, 3, 'm', 'e', 'm', 2, 0)...)                                                    // export memory
	b = append(b, sec(11, 2, 0, 0x41, 16, 0x0B, 3, 'a', 'b', 'c', 0, 0x41, 0x80, 0x01, 0x0B, 1, 'z')...)
	return b
}

func TestPrepareSnapshotTiny(t *testing.T) {
	out, sm, err := prepareSnapshot(tinyGoLike())
	if err != nil {
		t.Fatal(err)
	}
	if len(sm.globals) != 2 || sm.globals[0].index != 0 || sm.globals[1].index != 1 {
		t.Fatalf("globals %+v", sm.globals)
	}
	if len(sm.segments) != 2 || sm.segments[0].offset != 16 || string(sm.segments[0].data) != "abc" || sm.segments[1].offset != 128 {
		t.Fatalf("segments %+v", sm.segments)
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	cm, err := r.CompileModule(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cm.ExportedMemories()["mem"]; !ok {
		t.Fatal("memory export lost")
	}
	mod, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatal(err)
	}
	if g := mod.ExportedGlobal("__ldb_g1"); g == nil || int64(g.Get()) != -1 {
		t.Fatalf("global export: %v", g)
	}
	if b, _ := mod.Memory().Read(16, 3); string(b) != "\x00\x00\x00" {
		t.Fatal("instantiation wrote a data segment")
	}
}

// FuzzPrepareSnapshot: the rewrite never panics, and a module wazero
// accepts stays one wazero accepts, with the same exports plus the
// globals'.
func FuzzPrepareSnapshot(f *testing.F) {
	f.Add(tinyGoLike())
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		out, sm, err := prepareSnapshot(wasm)
		if err != nil {
			return
		}
		in, err := r.CompileModule(ctx, wasm)
		if err != nil {
			return // not a valid module: nothing to keep valid
		}
		defer in.Close(ctx)
		cm, err := r.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("valid input, invalid output: %v", err)
		}
		defer cm.Close(ctx)
		if len(cm.ExportedFunctions()) != len(in.ExportedFunctions()) || len(cm.ExportedMemories()) != len(in.ExportedMemories()) {
			t.Fatal("exports changed")
		}
		if len(sm.globals) > 0 {
			mod, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithStartFunctions())
			if err != nil {
				return // e.g. a trapping element segment: not the rewrite's doing
			}
			defer mod.Close(ctx)
			for _, g := range sm.globals {
				if mod.ExportedGlobal(g.export) == nil {
					t.Fatalf("%s not exported", g.export)
				}
			}
		}
	})
}
