"""Domain actors and the services around them, over the actor runtime (:mod:`actors.runtime`)."""
