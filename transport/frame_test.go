package transport

import (
	"bufio"
	"bytes"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"lambdadb/multiraft"
)

func TestFrameRoundTrip(t *testing.T) {
	var msgs []multiraft.Message
	for i := range 50 {
		msgs = append(msgs, multiraft.Message{Group: uint64(i) << (i % 60), Msg: app(1, 2, uint64(i), bytes.Repeat([]byte("x"), i*i))})
	}
	msgs = append(msgs, multiraft.Message{Group: 0, Msg: &pb.Message{}})
	frame, err := encodeFrame(msgs)
	if err != nil {
		t.Fatal(err)
	}
	// Two frames back to back, read through a small buffer.
	r := bufio.NewReaderSize(bytes.NewReader(append(frame, frame...)), 16)
	var buf []byte
	var batches [][]multiraft.Message
	for range 2 {
		var got []multiraft.Message
		got, buf, err = readFrame(r, buf)
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, got)
	}
	// The scratch buffer is reused: decoded messages must not alias it.
	clear(buf)
	for _, got := range batches {
		sameMessages(t, got, msgs)
	}
}

func TestReadNLarge(t *testing.T) {
	data := bytes.Repeat([]byte("abcdefgh"), (5<<20)/8)
	got, err := readN(bytes.NewReader(data), nil, len(data))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("readN: %v", err)
	}
	// A length the stream does not back fails without allocating it all.
	got, err = readN(bytes.NewReader(data[:10]), nil, MaxFrameSize)
	if err == nil || cap(got) > 2*readStep {
		t.Fatalf("short stream: err %v, cap %d", err, cap(got))
	}
}

func FuzzDecodeFrame(f *testing.F) {
	seed := func(msgs ...multiraft.Message) {
		b, err := encodeFrame(msgs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed()
	seed(multiraft.Message{Group: 1, Msg: heartbeat(1, 2, 3)})
	seed(multiraft.Message{Group: 1, Msg: heartbeat(1, 2, 3)}, multiraft.Message{Group: 1 << 40, Msg: app(2, 1, 9, []byte("payload"))})
	seed(multiraft.Message{Group: 7, Msg: snapMsg(1, 2, 100)}, multiraft.Message{Group: 8, Msg: &pb.Message{
		Type: pb.MsgStorageAppend.Enum(), Responses: []*pb.Message{heartbeat(1, 2, 3)}, Context: []byte("ctx")}})
	for _, bad := range corruptFrames(&testing.T{}) {
		f.Add(bad)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, _, err := readFrame(bufio.NewReader(bytes.NewReader(data)), nil)
		if err != nil {
			return
		}
		// What decodes re-encodes to a frame that decodes the same.
		frame, err := encodeFrame(msgs)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, _, err := readFrame(bufio.NewReader(bytes.NewReader(frame)), nil)
		if err != nil {
			t.Fatalf("decode re-encoded frame: %v", err)
		}
		if len(again) != len(msgs) {
			t.Fatalf("%d messages, then %d", len(msgs), len(again))
		}
		for i := range msgs {
			if again[i].Group != msgs[i].Group || !proto.Equal(again[i].Msg, msgs[i].Msg) {
				t.Fatalf("message %d changed in a round trip", i)
			}
		}
	})
}
