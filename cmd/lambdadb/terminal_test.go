package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"lambdadb/internal/wasmtest"
)

// openPTY opens a pseudo-terminal: the controller and the terminal end.
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	// Raw output: no \n → \r\n translation, so the bytes read are those written.
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(int(tty.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return ptmx, tty
}

// TestValueNewlineOnTerminal: `get` and `fn invoke` end a value without a
// newline with one on a terminal, and write it byte-exact to a pipe, a
// file or /dev/null.
func TestValueNewlineOnTerminal(t *testing.T) {
	dir := t.TempDir()
	addr := serveInProcess(t, dir)
	env := map[string]string{"LAMBDADB_SERVER": addr}
	echo := filepath.Join(dir, "echo.wasm")
	if err := os.WriteFile(echo, wasmtest.Example(t, "echo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"put", "k", "v"}, {"put", "nl", "line\n"}, {"fn", "deploy", "echo", echo}} {
		if r := runCLI(env, "", args...); r.code != 0 {
			t.Fatalf("%v: %s", args, r.stderr)
		}
	}
	ptmx, tty := openPTY(t)
	cases := []struct {
		args       []string
		piped, tty string
	}{
		{[]string{"get", "k"}, "v", "v\n"},
		{[]string{"get", "nl"}, "line\n", "line\n"},
		{[]string{"fn", "invoke", "echo", "hi"}, "hi", "hi\n"},
	}
	for _, tc := range cases {
		if r := runCLI(env, "", tc.args...); r.code != 0 || r.stdout != tc.piped {
			t.Errorf("%v to a buffer: %q (exit %d, %s), want %q", tc.args, r.stdout, r.code, r.stderr, tc.piped)
		}
		// A pipe and a file are not terminals.
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		c, _, stderr := testCLI(env, "")
		c.stdout = pw
		code := c.run(tc.args)
		pw.Close()
		got, _ := io.ReadAll(pr)
		pr.Close()
		if code != 0 || string(got) != tc.piped {
			t.Errorf("%v to a pipe: %q (exit %d, %s), want %q", tc.args, got, code, stderr, tc.piped)
		}
		// A terminal.
		c, _, stderr = testCLI(env, "")
		c.stdout = tty
		if code := c.run(tc.args); code != 0 {
			t.Fatalf("%v to a terminal: exit %d: %s", tc.args, code, stderr)
		}
		buf := make([]byte, 64)
		_ = ptmx.SetReadDeadline(time.Now().Add(5 * time.Second))
		var out []byte
		for len(out) < len(tc.tty) {
			n, err := ptmx.Read(buf)
			if err != nil {
				t.Fatalf("%v: reading the terminal: %v (read %q)", tc.args, err, out)
			}
			out = append(out, buf[:n]...)
		}
		if !bytes.Equal(out, []byte(tc.tty)) {
			t.Errorf("%v to a terminal: %q, want %q", tc.args, out, tc.tty)
		}
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if isTerminal(null) {
		t.Error("/dev/null counts as a terminal")
	}
}
