package auth_test

import (
	"fmt"
	"hash/crc32"
)

func crc(s string) string { return fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(s))) }
