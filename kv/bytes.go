package kv

import "encoding/binary"

func beBytes(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
