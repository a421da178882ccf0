"""What a call answered by a machine gets: the agent's (or the batch's) voicemail behaviour, the
answering machine detection a dial asks the provider for, and what is done once a machine is
detected. Pure functions; the calls service applies what they decide."""

from __future__ import annotations

from enum import StrEnum


class VoicemailBehavior(StrEnum):
    """What a call does when an answering machine picks up."""

    # End the call as soon as the machine is detected.
    HANG_UP = "hang_up"
    # Wait for the greeting to end, play the rendered voicemail message, then end the call.
    LEAVE_MESSAGE = "leave_message"
    # Leave the agent talking to whatever answered (what every call did before this setting).
    CONNECT_AGENT = "connect_agent"


# Agents and batches stored before the setting existed behave as they did: the agent talks to
# whoever, or whatever, answers.
DEFAULT_BEHAVIOR = VoicemailBehavior.CONNECT_AGENT


class MachineDetection(StrEnum):
    """The answering machine detection a dial asks for. It is always asynchronous: the call is
    connected to the agent at once and the verdict comes later, on a callback of its own."""

    OFF = "off"
    # A verdict as soon as a person or a machine is recognised.
    ANSWERED_BY = "answered_by"
    # For a machine, a verdict only once its greeting has ended (the beep, or silence).
    MESSAGE_END = "message_end"


class MachineAction(StrEnum):
    """What a machine verdict makes the dispatcher do to the live call."""

    NOTHING = "nothing"
    HANG_UP = "hang_up"
    LEAVE_MESSAGE = "leave_message"


# What a call's ``voicemail_action`` records once the provider took the action.
ACTION_TAKEN = {
    MachineAction.HANG_UP: "hung_up",
    MachineAction.LEAVE_MESSAGE: "message_left",
}
MESSAGE_LEFT = ACTION_TAKEN[MachineAction.LEAVE_MESSAGE]


def detection_for(behavior: str, connect_agent_detection: MachineDetection) -> MachineDetection:
    """The detection a call of this behaviour is placed with: hanging up needs the first
    verdict, leaving a message the end of the greeting; a call that keeps its agent on the line
    whatever answers asks for what is configured for it (``connect_agent_detection``), which
    only records whether a machine answered."""
    if behavior == VoicemailBehavior.HANG_UP:
        return MachineDetection.ANSWERED_BY
    if behavior == VoicemailBehavior.LEAVE_MESSAGE:
        return MachineDetection.MESSAGE_END
    return connect_agent_detection


def is_machine(answered_by: str | None) -> bool:
    """Whether the provider's verdict names an answering machine (``machine_start``,
    ``machine_end_beep``, ``machine_end_silence``, ``machine_end_other``)."""
    return bool(answered_by) and str(answered_by).startswith("machine")


def plan_machine_action(behavior: str, answered_by: str | None, live: bool) -> MachineAction:
    """What to do to a call on the detection verdict ``answered_by``: nothing for a person, a
    fax or an unknown verdict, for a call that already ended, or when the agent stays on."""
    if not live or not is_machine(answered_by):
        return MachineAction.NOTHING
    if behavior == VoicemailBehavior.HANG_UP:
        return MachineAction.HANG_UP
    if behavior == VoicemailBehavior.LEAVE_MESSAGE:
        return MachineAction.LEAVE_MESSAGE
    return MachineAction.NOTHING


def lacks_message(behavior: str, message: str) -> bool:
    """Whether leaving a message is asked for with no message to leave."""
    return behavior == VoicemailBehavior.LEAVE_MESSAGE and not message.strip()
