"""What each per-architecture stage of ``dvc.yaml`` runs, one function per stage (the
stage scripts in ``stages/`` only parse their arguments and call it): :func:`.train.run_train`,
:func:`.cluster.run_cluster`, :func:`.decoders.run_decoders`, :func:`.explore.run_explore`.
The track of the architecture (:mod:`aerestore.tracks`) does what differs between block
networks and fully convolutional ones."""
