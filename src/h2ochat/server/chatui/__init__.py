"""The chat-ui protocol: the conversations, messages and JSON reads that chat-ui's clients speak.

``routes`` is the 2023 generation (docs/protocol.md), which h2oGPT's page and gpt4free's ``H2o``
provider spoke. Handlers here store what they answer; the OpenAI and TGI APIs (``server.apis``)
store nothing.
"""
