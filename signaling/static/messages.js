// What the node's error codes (docs/protocol.md, "Errors") mean, said as sentences for
// the people in the meeting. The code and its technical text go to parley.errors
// (fault() in state.js); the chat only ever shows one of these.

const SENTENCES = {
  permission_denied: "You are not allowed to do that in this meeting.",
  too_many_tracks: "You are already sending as much as this meeting allows.",
  unknown_track: "That camera, microphone or screen is no longer shared.",
  unknown_participant: "That person is no longer in the meeting.",
  not_in_room: "You are no longer in the meeting.",
  not_joined: "You are not connected to the meeting yet.",
  rate_limited: "That was too fast. Wait a moment and try again.",
  stage_full: "The stage is full.",
  no_pending_request: "There is no request waiting for an answer.",
  already_requested: "A request is already waiting for an answer.",
  already_speaker: "They can already speak.",
  not_a_speaker: "They are not on stage.",
  metadata_too_large: "That is too long.",
  media_disabled: "This meeting has no audio or video.",
  invalid_sdp: "Your browser's media could not be set up with the meeting.",
  no_supported_codec: "Your browser cannot send video or sound in a format this meeting uses.",
  unknown_connection: "The media connection was lost.",
  connection_closed: "The media connection was lost.",
  internal_error: "Something went wrong on the meeting's side.",
};

/** A sentence for a refused request (a RequestError with a `code`) or any other error. */
export function sentence(err, fallback = "That did not work. Please try again.") {
  const code = err && err.code;
  return (code && SENTENCES[code]) || fallback;
}
