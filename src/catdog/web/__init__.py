"""The web layer: blueprints, upload parsing, the shared model and error mapping.

``catdog.web.app.create_app`` wires these modules together; nothing here loads a model
or imports TensorFlow at import time. This is the only place where library
exceptions (``InvalidImage``, ``ModelError``) become HTTP statuses.
"""
