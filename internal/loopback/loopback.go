// Package loopback reserves addresses on 127.0.0.1 for test and benchmark
// harnesses that start servers as separate processes. It is safe for
// concurrent use.
package loopback

import "net"

// FreeAddrs returns n distinct free "127.0.0.1:port" addresses. The ports
// are released before it returns, so another process could take one in
// between; callers report a failure to listen as such.
func FreeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
