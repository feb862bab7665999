"""The stateless APIs beside the chat protocol: OpenAI's ``/v1`` (``openai``) and TGI's ``/generate`` (``tgi``).

Each speaks its peer's wire format through the one answer loop (``server.streaming``) and stores
nothing; they never import each other.
"""
