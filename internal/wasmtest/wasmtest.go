// Package wasmtest builds Go packages into WebAssembly handler modules for
// tests: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared, exactly as a
// user builds a handler. Builds are cached per test process.
//
// It is for tests only; production code must not import it.
package wasmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	mu     sync.Mutex
	dir    string
	builds = map[string][]byte{}
)

// Root returns the module root (the directory holding go.mod).
func Root() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", fmt.Errorf("wasmtest: no go.mod above the working directory")
		}
		d = up
	}
}

// Build compiles the package at pkg (a path relative to the module root,
// such as "examples/echo") and returns the module's bytes.
func Build(tb testing.TB, pkg string) []byte {
	tb.Helper()
	b, err := BuildErr(pkg)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BuildErr is Build returning its error.
func BuildErr(pkg string) ([]byte, error) {
	mu.Lock()
	defer mu.Unlock()
	if b, ok := builds[pkg]; ok {
		return b, nil
	}
	root, err := Root()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "lambdadb-wasmtest-"); err != nil {
			return nil, err
		}
	}
	out := filepath.Join(dir, fmt.Sprintf("m%d.wasm", len(builds)))
	cmd := exec.Command(goBinary(), "build", "-buildmode=c-shared", "-o", out, "./"+pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("wasmtest: build %s: %v\n%s", pkg, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	builds[pkg] = b
	return b, nil
}

// Example builds examples/<name>.
func Example(tb testing.TB, name string) []byte { tb.Helper(); return Build(tb, "examples/"+name) }

// Guest builds one of the test guests in internal/wasmtest/testdata.
func Guest(tb testing.TB, name string) []byte {
	tb.Helper()
	return Build(tb, "internal/wasmtest/testdata/"+name)
}

// goBinary finds the go command: $GOROOT/bin/go when go test set GOROOT,
// else the one on PATH.
func goBinary() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
