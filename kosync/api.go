package kosync

import (
	"encoding/json"
	"sort"
)

// APIDocument is a document in the KOsync API shape (reference B.8): every
// key present, in this order; zero values stand for unset fields. History is
// null in announces and update results, an array (maybe empty) in
// documents.all.
type APIDocument struct {
	ID         string         `json:"id"`
	Progress   string         `json:"progress"`
	Percentage float64        `json:"percentage"`
	Device     string         `json:"device"`
	DeviceID   string         `json:"device_id"`
	Document   string         `json:"document"`
	Timestamp  int64          `json:"timestamp"`
	PrettyName string         `json:"pretty_name"`
	History    []HistoryEntry `json:"history"`
}

// toAPI returns d in the API shape; withHistory gives History as an array
// (documents.all), otherwise null.
func toAPI(d *Document, withHistory bool) APIDocument {
	a := APIDocument{ID: d.ID, Document: d.ID, Timestamp: d.Timestamp, PrettyName: d.PrettyName}
	if d.Progress != nil {
		a.Progress = *d.Progress
	}
	if d.Percentage != nil {
		a.Percentage = *d.Percentage
	}
	if d.Device != nil {
		a.Device = *d.Device
	}
	if d.DeviceID != nil {
		a.DeviceID = *d.DeviceID
	}
	if withHistory {
		a.History = append([]HistoryEntry{}, d.History...)
	}
	return a
}

// sortNewestFirst orders documents.all: newest timestamp first, ties by id.
func sortNewestFirst(docs []APIDocument) {
	sort.Slice(docs, func(i, j int) bool {
		if docs[i].Timestamp != docs[j].Timestamp {
			return docs[i].Timestamp > docs[j].Timestamp
		}
		return docs[i].ID < docs[j].ID
	})
}

// TopicUserDocuments is the only pubsub topic.
const TopicUserDocuments = "user.documents"

// userChannel is the hub channel of a user's announces.
func userChannel(user string) string { return "#kosync:" + user }

// announceFrame encodes the pubsub message that announces d, once for every
// recipient.
func announceFrame(d *Document) []byte {
	b, _ := json.Marshal(struct {
		Type    string `json:"type"`
		Payload struct {
			ForTopic string      `json:"for_topic"`
			Data     APIDocument `json:"data"`
		} `json:"payload"`
	}{Type: "pubsub", Payload: struct {
		ForTopic string      `json:"for_topic"`
		Data     APIDocument `json:"data"`
	}{TopicUserDocuments, toAPI(d, false)}})
	return b
}
