# The example jobs end to end at 2 ranks: they train on real data (/usr/share/common-licenses)
# and must beat their untrained or chance score (run_example.sh parses the metric line).
# Included at the end of tests/trainer/CMakeLists.txt; examples/ is configured before tests/,
# so its targets exist here.
set(COHORT_EXAMPLES_OUT ${CMAKE_CURRENT_BINARY_DIR}/examples_out)
if(TARGET train_lm)
  add_test(NAME examples.train_lm
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/run_example.sh perplexity
            ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 ${COHORT_MPIEXEC_FLAGS}
            $<TARGET_FILE:train_lm> --config ${PROJECT_SOURCE_DIR}/examples/train_lm.txtpb
            --max_steps=30 --logging_steps=10 --overwrite_output_dir=true
            --output_dir=${COHORT_EXAMPLES_OUT}/train_lm)
  set_tests_properties(examples.train_lm PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2
    ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endif()
if(TARGET train_classifier)
  add_test(NAME examples.train_classifier
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/run_example.sh accuracy
            ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 ${COHORT_MPIEXEC_FLAGS}
            $<TARGET_FILE:train_classifier>
            --config ${PROJECT_SOURCE_DIR}/examples/train_classifier.txtpb
            --max_steps=60 --report_to=console --overwrite_output_dir=true
            --output_dir=${COHORT_EXAMPLES_OUT}/train_classifier)
  set_tests_properties(examples.train_classifier PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2
    ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endif()
# The programs' command line (issues 21.6, 21.7): --help, stray arguments, bad config paths.
if(TARGET train_lm AND TARGET train_classifier AND TARGET smoke_job)
  add_test(NAME examples.program_cli
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/program_cli_test.sh $<TARGET_FILE:train_lm>
            $<TARGET_FILE:train_classifier> $<TARGET_FILE:smoke_job> ${MPIEXEC_EXECUTABLE}
            ${COHORT_MPIEXEC_FLAGS})
  set_tests_properties(examples.program_cli PROPERTIES LABELS mpi TIMEOUT 900 PROCESSORS 2
    ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endif()
# A resumed train_lm's "before" perplexity is the checkpoint's (issue 21.9).
if(TARGET train_lm)
  add_test(NAME examples.resume_before
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/resume_before_test.sh $<TARGET_FILE:train_lm>
            ${PROJECT_SOURCE_DIR}/examples/train_lm.txtpb ${MPIEXEC_EXECUTABLE}
            ${COHORT_MPIEXEC_FLAGS})
  set_tests_properties(examples.resume_before PROPERTIES LABELS mpi TIMEOUT 900 PROCESSORS 2
    ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endif()
