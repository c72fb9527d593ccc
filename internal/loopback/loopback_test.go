package loopback

import (
	"net"
	"strings"
	"testing"
)

func TestFreeAddrs(t *testing.T) {
	addrs, err := FreeAddrs(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if !strings.HasPrefix(a, "127.0.0.1:") || seen[a] {
			t.Fatalf("bad or repeated address %q in %v", a, addrs)
		}
		seen[a] = true
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("reserved address %s is not free: %v", a, err)
		}
		l.Close()
	}
}
