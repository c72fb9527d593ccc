package multiraft

import "encoding/binary"

// A proposal's entry data is an envelope: a version byte, the proposing
// node's id and its sequence number (both big-endian uint64), then the
// payload. The proposer matches applied entries to its waiting proposals by
// (node, sequence); raft's own empty entries have no data.
const (
	envelopeV1  byte = 1
	envelopeLen      = 1 + 8 + 8
)

func encodeEnvelope(node, seq uint64, payload []byte) []byte {
	b := make([]byte, envelopeLen+len(payload))
	b[0] = envelopeV1
	binary.BigEndian.PutUint64(b[1:], node)
	binary.BigEndian.PutUint64(b[9:], seq)
	copy(b[envelopeLen:], payload)
	return b
}

// decodeEnvelope splits entry data. ok is false for data that is not an
// envelope (empty data, or another version).
func decodeEnvelope(b []byte) (node, seq uint64, payload []byte, ok bool) {
	if len(b) < envelopeLen || b[0] != envelopeV1 {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint64(b[1:]), binary.BigEndian.Uint64(b[9:]), b[envelopeLen:], true
}
