//go:build !wasip1

package fn_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"lambdadb/sdk/fn"
)

// The tests register entry points once; every test drives them through a
// Local. The entry points exercise the whole host API.
func init() {
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) {
		switch cmd, arg, _ := strings.Cut(string(req), " "); cmd {
		case "get":
			v, ok, err := c.Get(arg)
			return []byte(fmt.Sprintf("%s %v", v, ok)), err
		case "put":
			k, v, _ := strings.Cut(arg, "=")
			return nil, c.Put(k, []byte(v))
		case "del":
			return nil, c.Delete(arg)
		case "scan":
			var keys []string
			err := c.Scan(arg, func(k string, v []byte) bool {
				keys = append(keys, k+"="+string(v))
				return len(keys) < 5
			})
			return []byte(strings.Join(keys, ",")), err
		case "cas":
			_, ver, _, err := c.GetVersion(arg)
			if err != nil {
				return nil, err
			}
			ok1, _ := c.CompareAndPut(arg, []byte("a"), ver)
			ok2, _ := c.CompareAndPut(arg, []byte("b"), ver)
			return []byte(fmt.Sprint(ok1, ok2)), nil
		case "key":
			return []byte(c.Key()), nil
		case "log":
			c.Log("logged %s", arg)
			fn.Sleep(time.Second)
			return nil, nil
		case "fail":
			return nil, errors.New("it failed")
		case "panic":
			panic("boom")
		}
		return req, nil
	})
	fn.Combine(func(parts [][]byte) ([]byte, error) {
		var s []string
		for _, p := range parts {
			s = append(s, string(p))
		}
		return []byte(strings.Join(s, "+")), nil
	})
}

func TestLocal(t *testing.T) {
	l := fn.NewLocal()
	for i := 0; i < 7; i++ {
		l.Put(fmt.Sprintf("p/%d", i), []byte(fmt.Sprint(i)))
	}
	l.Put("q/x", []byte("x"))
	tests := []struct {
		req, key, want, err string
	}{
		{req: "echo"},
		{req: "get p/3", want: "3 true"},
		{req: "get nope", want: " false"},
		{req: "put a=b"},
		{req: "get a", want: "b true"},
		{req: "del a"},
		{req: "get a", want: " false"},
		{req: "scan p/", want: "p/0=0,p/1=1,p/2=2,p/3=3,p/4=4"},
		{req: "scan q/", want: "q/x=x"},
		{req: "cas p/1", want: "true false"},
		{req: "cas fresh", want: "true false"},
		{req: "key", key: "K", want: "K"},
		{req: "fail", err: "it failed"},
		{req: "panic", err: "panic: boom"},
		{req: "get ", err: "invalid_key"},
	}
	for _, tt := range tests {
		t.Run(tt.req, func(t *testing.T) {
			out, err := l.InvokeKey(tt.key, []byte(tt.req))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == "" && tt.req == "echo" {
				want = "echo"
			}
			if string(out) != want {
				t.Fatalf("got %q, want %q", out, want)
			}
		})
	}
	if _, err := l.Invoke([]byte("log x")); err != nil {
		t.Fatal(err)
	}
	if got := l.Logs(); len(got) != 1 || got[0] != "logged x" {
		t.Fatalf("logs = %q", got)
	}
	if l.Slept() != time.Second {
		t.Fatalf("slept %v", l.Slept())
	}
	out, err := l.Combine([][]byte{[]byte("a"), []byte("b")})
	if err != nil || string(out) != "a+b" {
		t.Fatalf("combine = %q, %v", out, err)
	}
	if got := strings.Join(l.Entrypoints(), ","); got != "handle,combine" {
		t.Fatalf("entry points %q", got)
	}
	if _, err := l.Leaf("p/"); err == nil || !strings.Contains(err.Error(), "no Leaf") {
		t.Fatalf("leaf without registration: %v", err)
	}
}
